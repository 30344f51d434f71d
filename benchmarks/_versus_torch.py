"""Helpers for the "normlab vs torch" benchmarks.

Paired timing for ratios on a shared, noisy machine: the two functions alternate, one call each per
repetition, so a burst of load from elsewhere slows both rather than one. Each call is timed on the wall
clock and in process CPU time; with one thread per side, CPU time is the measure that other processes on
the machine disturb least.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from normlab.bench.timing import SETTLE_SECONDS


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


class Timing(NamedTuple):
    wall: float  # median seconds
    cpu: float  # median process CPU seconds (all threads)


def paired_medians(ours: Callable[[], object], theirs: Callable[[], object], repeats: int = 7,
                   warmup: int = 1, settle: float = SETTLE_SECONDS) -> tuple[Timing, Timing]:
    """Medians for `ours` and for `theirs`, timed alternately after `warmup` calls of each.

    Each turn starts after `settle` seconds idle: OpenBLAS's and torch's OpenMP worker threads keep spinning
    for about 0.1 s after their work, and without the pause they hold a core the next contender needs
    (without it, torch's bn-cnn step measured 2.4x slower, which made normlab look 1.16x faster than torch
    when it is 0.42x)."""
    for _ in range(warmup):
        ours()
        theirs()
    samples: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((ours, samples[0]), (theirs, samples[1])):
            time.sleep(settle)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            bucket.append((time.perf_counter() - wall, time.process_time() - cpu))
    return tuple(Timing(statistics.median(s[0] for s in b), statistics.median(s[1] for s in b)) for b in samples)
