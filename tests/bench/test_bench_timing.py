"""The timing helpers: medians of interleaved repetitions, and the bandwidth limit."""

import numpy as np
import pytest

from normlab.bench.timing import Bandwidth, copy_bandwidth, time_passes


def test_time_passes_interleaves_and_feeds_each_forward_to_its_backward():
    calls = []

    def make(name):
        def forward():
            calls.append(("forward", name))
            return name

        def backward(state):
            assert state == name  # the backward gets its own forward's result
            calls.append(("backward", name))

        return forward, backward

    times = time_passes({"a": make("a"), "b": make("b")}, repeats=3, warmup=1)
    assert set(times) == {"a", "b"}
    assert calls[:4] == [("forward", "a"), ("backward", "a"), ("forward", "b"), ("backward", "b")]
    assert len(calls) == 4 * 4  # (warmup + repeats) x 2 contenders x (forward + backward)
    assert all(t.forward >= 0 and t.backward >= 0 and t.total == t.forward + t.backward for t in times.values())


def test_the_limit_is_the_best_copy():
    assert Bandwidth(30.0, 55.0, 2).limit == 55.0
    assert Bandwidth(30.0, None, 1).limit == 30.0


def test_copy_bandwidth_measures_both_copies():
    bw = copy_bandwidth(1 << 20, repeats=2, threads=1)
    assert bw.numpy_one_thread > 0 and np.isfinite(bw.numpy_one_thread)
    assert bw.parallel is None or bw.parallel > 0


def test_pass_times_measure_what_ran():
    import time

    times = time_passes({"sleepy": (lambda: time.sleep(0.002), lambda _: time.sleep(0.004))}, repeats=3)["sleepy"]
    assert 0.002 <= times.forward < 0.05 and 0.004 <= times.backward < 0.05
    assert 0.006 <= times.best_total <= 3 * times.total


def test_the_settle_pause_comes_before_every_turn_and_is_not_timed():
    import time

    starts = []

    def forward():
        starts.append(time.perf_counter())

    times = time_passes({"a": (forward, lambda _: None), "b": (forward, lambda _: None)}, repeats=2, warmup=0,
                        settle=0.02)
    gaps = np.diff(starts)
    assert len(starts) == 4 and gaps.min() >= 0.02  # a pause before each turn, the other contender's too
    assert all(t.forward < 0.02 and t.total < 0.02 for t in times.values())  # the pause is not in the times


def test_a_negative_settle_is_refused():

    with pytest.raises(ValueError, match="settle must be >= 0 seconds, got -1"):
        time_passes({"a": (lambda: None, lambda _: None)}, repeats=1, settle=-1)


def test_a_burst_times_its_passes_back_to_back_after_an_untimed_one():
    import time

    calls = []

    def forward():
        calls.append(time.perf_counter())
        time.sleep(0.03 if len(calls) % 4 == 1 else 0.0)  # the first pass of each turn is slow

    times = time_passes({"a": (forward, lambda _: None)}, repeats=2, warmup=0, settle=0.2, burst=3)["a"]
    assert len(calls) == 8  # 2 turns of 1 untimed + 3 timed passes
    assert times.forward < 0.025  # the slow first passes are not among the timed ones
    gaps = np.diff(calls)
    assert gaps[[0, 1, 2, 4, 5, 6]].max() < 0.15 and gaps[3] >= 0.2  # back to back within a turn, paused between
    with pytest.raises(ValueError, match="burst must be >= 1 pass, got 0"):
        time_passes({"a": (forward, lambda _: None)}, repeats=1, burst=0)
