"""The video routing broker."""

__version__ = "0.1.0"
