"""The copy that bounds every memory-bound kernel: the same threads as the normalization kernels, one
read and one write per element. `normlab bench` times it to measure this machine's bandwidth."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _copy(dst, src):
    for i in prange(src.shape[0]):
        dst[i] = src[i]


def parallel_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src for two C-contiguous arrays of one shape and dtype, on numba's threads."""
    if dst.shape != src.shape or dst.dtype != src.dtype:
        raise ValueError(f"dst and src must match, got {dst.shape} {dst.dtype} and {src.shape} {src.dtype}")
    _copy(dst.reshape(-1), src.reshape(-1))
