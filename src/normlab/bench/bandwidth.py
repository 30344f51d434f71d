"""The copy bandwidth that bounds memory-bound kernels: the yardstick of `normlab bench`'s "% limit"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.timing import median_seconds


@dataclass(frozen=True)
class Bandwidth:
    """Copy bandwidth in GB/s (1e9 bytes, counting the read and the write)."""

    numpy_one_thread: float  # np.copyto
    parallel: float | None  # numba's parallel copy on the kernels' threads, when numba imports
    threads: int

    @property
    def limit(self) -> float:
        """The best copy this machine did: the bound a memory-bound kernel is measured against."""
        return max(self.numpy_one_thread, self.parallel or 0.0)


def copy_bandwidth(nbytes: int, repeats: int, threads: int) -> Bandwidth:
    """Copy a `nbytes` float32 array into another (both touched first, so no page faults are timed).
    Choose nbytes well above the last-level cache, or the figure is the cache's."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.zeros_like(src)
    numpy_seconds = median_seconds(lambda: np.copyto(dst, src), repeats)
    parallel = None
    try:
        from normlab.kernels.copy_numba import parallel_copy
    except ImportError:  # numba missing: the kernels run NumPy, and so does the yardstick
        pass
    else:
        parallel = 2 * src.nbytes / median_seconds(lambda: parallel_copy(dst, src), repeats) / 1e9
    return Bandwidth(2 * src.nbytes / numpy_seconds / 1e9, parallel, threads)
