"""The number of threads of the OpenBLAS library that NumPy uses, set at run time.

OpenBLAS reads OPENBLAS_NUM_THREADS only when it is loaded, so a program that has imported NumPy needs the
library's own `openblas_set_num_threads` to change it. NumPy's wheels bundle OpenBLAS under prefixed
names (scipy_openblas_set_num_threads64_ in NumPy 2); this module finds the loaded library through
/proc/self/maps (Linux) and tries each spelling. Where there is no OpenBLAS (Accelerate on macOS, MKL) or
no /proc, the functions do nothing and say so by returning None.

Why: the training experiments multiply small matrices (batches of 2 to 128 by a few hundred features), which
one thread does as fast as several; on a machine whose cores are busy with other work, OpenBLAS's threads
wait for each other, and a run took many times longer with two threads than with one (docs/performance.md,
"Measurements behind design choices").
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from functools import cache

from normlab.checks import check_positive_int

_SPELLINGS = [(f"{prefix}openblas_set_num_threads{suffix}", f"{prefix}openblas_get_num_threads{suffix}")
              for prefix in ("scipy_", "") for suffix in ("64_", "")]


@cache
def _openblas() -> tuple | None:
    """(set_num_threads, get_num_threads) of the OpenBLAS loaded in this process, or None."""
    import numpy  # noqa: F401  (loads NumPy's BLAS, so that it is in the maps)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SPELLINGS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None


def blas_threads() -> int | None:
    """OpenBLAS's current number of threads, or None without OpenBLAS."""
    found = _openblas()
    return None if found is None else int(found[1]())


def set_blas_threads(n: int) -> int | None:
    """Set OpenBLAS's number of threads to n for the rest of the process (as OPENBLAS_NUM_THREADS would
    have at start-up). Returns the number now in force, or None without OpenBLAS (nothing changes)."""
    n = check_positive_int("n", n, what="number of threads")
    found = _openblas()
    if found is None:
        return None
    setter, getter = found
    setter(n)
    return int(getter())


@contextlib.contextmanager
def limited_blas_threads(n: int = 1) -> Iterator[int | None]:
    """Run the block with OpenBLAS on at most n threads, restoring the previous number after. Yields the
    number in force inside (None without OpenBLAS, when nothing changes)."""
    n = check_positive_int("n", n, what="number of threads")
    found = _openblas()
    if found is None:
        yield None
        return
    setter, getter = found
    before = int(getter())
    setter(min(n, before))
    try:
        yield int(getter())
    finally:
        setter(before)
