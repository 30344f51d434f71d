"""normlab: batch normalization and its relatives, understood, checked and used, in NumPy."""

__version__ = "0.1.0"
