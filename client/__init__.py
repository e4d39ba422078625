"""xmodal client package."""
