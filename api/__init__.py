"""xmodal api package."""
