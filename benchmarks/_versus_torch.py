"""Helpers for the "normlab vs torch" benchmarks: torch on a given thread count, and what NumPy's BLAS was
told. The timing itself is `normlab.timing` (`interleaved_medians`: the sides alternate)."""

from __future__ import annotations

import os
import sys


def import_torch(threads: int):
    """torch, set to `threads` intra-op threads, or exit with an install hint."""
    try:
        import torch
    except ImportError:
        sys.exit("torch not installed: pip install 'normlab[torch]' to compare")
    torch.set_num_threads(threads)
    return torch


def blas_threads() -> str:
    """How many threads NumPy's BLAS was told to use, as the environment says."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            return f"{var}={os.environ[var]}"
    return f"unset (BLAS uses all {os.cpu_count()} cores)"
