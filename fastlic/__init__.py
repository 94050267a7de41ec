"""fastlic: a deployment runtime for fast learned image compression."""
__version__ = "0.1.0"
