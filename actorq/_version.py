"""The package version (one home: the package, its command line and its metadata read it here)."""

__version__ = "0.1.0"
