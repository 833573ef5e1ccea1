"""Test support: start registries (server.py) and build test images (images.py)."""
