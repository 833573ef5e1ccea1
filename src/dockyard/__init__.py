"""Dockyard: a self-hosted private OCI container and artifact registry."""

__version__ = "0.1.0"
