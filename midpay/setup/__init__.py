"""Setting up and trying an installation: doctor and the demo."""
