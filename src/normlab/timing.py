"""Timing on a shared, noisy machine: the one harness of `normlab bench`, the backward-speed experiment and
the scripts in benchmarks/. Below every layer (it imports nothing of normlab), so all of them may use it.

- `median_seconds`: one function called back to back; the median of its repetitions.
- `time_passes`: contenders (forward, backward) taking turns repetition by repetition, each turn after a
  pause (`SETTLE_SECONDS`), so that a burst of load from elsewhere falls on all of them alike.
- `interleaved_medians`: functions taking turns, timed on the wall clock and in process CPU time.
- `paired_samples`: functions taking turns, each sample repeating a fast function long enough to time it.

The measurements behind the pause and the burst are in docs/performance.md ("Measurements behind design
choices").
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

# A pass is (forward, backward): forward() returns what backward(state) needs; both are timed.
Pass = tuple[Callable[[], object], Callable[[object], object]]

# Seconds to wait before a contender's turn: longer than the busy-wait of the thread pools the previous
# contender woke. OpenBLAS's workers spin (yielding) for about 2**28 cycles (~0.1 s) after a product, and
# torch's OpenMP workers spin after every parallel region; on a machine with few cores those spinners hold a
# core that the next contender's own threads need, and a product waiting for a descheduled thread takes a
# scheduler slice instead of its time.
SETTLE_SECONDS = 0.15


def median_seconds(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> float:
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
class PassTimes:
    """Median seconds of a forward and of the backward that follows it, and the fastest forward +
    backward (on a shared machine, the run least disturbed by others)."""

    forward: float
    backward: float
    best_total: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


def time_passes(contenders: Mapping[str, Pass], repeats: int, warmup: int = 1,
                settle: float = SETTLE_SECONDS, burst: int = 1) -> dict[str, PassTimes]:
    """Median forward and backward time of every contender, the contenders taking turns repetition by
    repetition. Each repetition runs a fresh forward, then the backward on its result, as in training
    (so outputs are allocated anew each time, as they would be).

    settle: seconds slept, untimed, before each turn, so that the thread pools the previous turn woke
    (OpenBLAS, torch's OpenMP, numba's) are asleep again and each contender is timed on idle cores, as
    in a process of its own.
    burst: passes per turn, run back to back after one untimed pass, each timed: a pass straight after the
    pause pays for waking threads and cold caches, which a training loop, calling layer after layer, does
    not. With burst 1 (and warmup turns aside), the single pass of each turn is timed, pause and all.
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


class Timing(NamedTuple):
    wall: float  # median seconds
    cpu: float  # median process CPU seconds (all threads)


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                        settle: float = SETTLE_SECONDS) -> dict[str, Timing]:
    """Medians of every function, the functions taking turns call by call after `warmup` calls of each,
    each turn after `settle` seconds idle (see `SETTLE_SECONDS`). Each call is timed on the wall clock and
    in process CPU time; with one thread per side, CPU time is the measure that other processes on the
    machine disturb least, and CPU over wall time tells how many cores a call kept busy."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(settle)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: Timing(*map(statistics.median, zip(*pairs))) for name, pairs in samples.items()}


def paired_samples(fns: tuple[Callable[[], object], ...], repeats: int, min_sample: float = 2e-3) -> list[list[float]]:
    """`repeats` samples of the seconds per call of each function. Samples of the functions alternate, so
    a burst of load on the machine hits all of them; a sample repeats a fast function enough times to last
    about `min_sample` seconds, since a single call of a few microseconds is below the timer's resolution."""
    loops = []
    for fn in fns:  # warm-up call, which also sizes the samples
        started = time.perf_counter()
        fn()
        loops.append(max(1, round(min_sample / max(time.perf_counter() - started, 1e-7))))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, n, times in zip(fns, loops, samples):
            started = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - started) / n)
    return samples
