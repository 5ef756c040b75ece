"""traindyn: a reproducible pipeline that studies how neural networks train."""

__version__ = "0.1.0"
