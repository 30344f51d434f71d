"""A cache field that may be left out (None) and is then computed on first read.

The compiled forward does not store xhat: writing it would add a third of the forward's memory traffic,
and the backward recomputes it from x for free. The caches keep `xhat` as an ordinary, required field for
everyone who reads it (the NumPy backward, SyncBatchNorm, users); when the forward passed None, the first
read computes it with the cache's own method and keeps it.
"""

from __future__ import annotations


class RecomputedWhenNone:
    """Descriptor for a field of a frozen dataclass: holds a value, or None meaning "call the instance's
    method `method_name` on first read and keep the result".

    Class access raises AttributeError, which tells `dataclasses` the field has no default: it stays
    required and keeps its place among the positional arguments.
    """

    def __init__(self, method_name: str):
        self.method_name = method_name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.key = f"_{name}_value"

    def __get__(self, obj, owner=None):
        if obj is None:
            raise AttributeError(self.name)
        value = obj.__dict__[self.key]
        if value is None:
            value = getattr(obj, self.method_name)()
            obj.__dict__[self.key] = value
        return value

    def __set__(self, obj, value) -> None:
        # Only the dataclass __init__ gets here: a frozen instance refuses assignment before this.
        obj.__dict__[self.key] = value
