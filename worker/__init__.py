"""xmodal worker package."""
