"""Build reproducible OCI and Docker images from Python projects, without Docker."""

__all__ = ["__version__"]

__version__ = "0.1.0"
