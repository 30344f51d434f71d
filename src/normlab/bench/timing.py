"""Timing on a shared, noisy machine: medians of repetitions, contenders interleaved so that a burst of
load from elsewhere falls on all of them alike, and the copy bandwidth that bounds memory-bound kernels."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

# A pass is (forward, backward): forward() returns what backward(state) needs; both are timed.
Pass = tuple[Callable[[], object], Callable[[object], object]]


@dataclass(frozen=True)
class PassTimes:
    """Median seconds of a forward and of the backward that follows it, and the fastest forward +
    backward (on a shared machine, the run least disturbed by others)."""

    forward: float
    backward: float
    best_total: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


# Seconds to wait before a contender's turn: longer than the busy-wait of the thread pools the previous
# contender woke. OpenBLAS's workers spin (yielding) for about 2**28 cycles (~0.1 s) after a product, and
# torch's OpenMP workers spin after every parallel region; on a 2-core machine those spinners hold a core
# that the next contender's own threads need, and a product waiting for a descheduled thread takes a
# scheduler slice instead of its time. Back to back, a bn-cnn step (batch 64, 2 threads) measured 1296 ms
# for normlab and 1404 ms for torch on 2 shared cores; with this pause, 136 to 355 ms and ~1030 ms.
SETTLE_SECONDS = 0.15


def time_passes(contenders: Mapping[str, Pass], repeats: int, warmup: int = 1,
                settle: float = SETTLE_SECONDS, burst: int = 1) -> dict[str, PassTimes]:
    """Median forward and backward time of every contender, the contenders taking turns repetition by
    repetition. Each repetition runs a fresh forward, then the backward on its result, as in training
    (so outputs are allocated anew each time, as they would be).

    settle: seconds slept, untimed, before each turn, so that the thread pools the previous turn woke
    (OpenBLAS, torch's OpenMP, numba's) are asleep again and each contender is timed on idle cores, as
    in a process of its own.
    burst: passes per turn, run back to back after one untimed pass, each timed: a pass straight after the
    pause pays for waking threads and cold caches (3x for a layer norm here), which a training loop,
    calling layer after layer, does not. With burst 1 (and warmup turns aside), the single pass of each
    turn is timed, pause and all.
    """
    if settle < 0:
        raise ValueError(f"settle must be >= 0 seconds, got {settle}")
    if burst < 1:
        raise ValueError(f"burst must be >= 1 pass, got {burst}")
    samples = {name: ([], []) for name in contenders}
    for rep in range(warmup + repeats):
        for name, (forward, backward) in contenders.items():
            if settle:
                time.sleep(settle)
            for j in range(burst + 1 if burst > 1 else 1):
                t0 = time.perf_counter()
                state = forward()
                t1 = time.perf_counter()
                backward(state)
                t2 = time.perf_counter()
                del state
                if rep >= warmup and (burst == 1 or j > 0):
                    samples[name][0].append(t1 - t0)
                    samples[name][1].append(t2 - t1)
    return {
        name: PassTimes(statistics.median(f), statistics.median(b), min(map(sum, zip(f, b))))
        for name, (f, b) in samples.items()
    }


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
