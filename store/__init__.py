"""xmodal store package."""
