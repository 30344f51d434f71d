"""The errors the data layer raises. Each message names the file and says what was expected and found."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A dataset file is truncated, corrupted or not in the format its name promises."""


class UnsafePickleError(DataFormatError):
    """A pickle asked for a Python object outside what the dataset format holds; it was not executed."""


class ChecksumError(ValueError):
    """A downloaded file's checksum differs from the published one."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the places looked at, and could not be downloaded."""
