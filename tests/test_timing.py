"""The one timing module: medians of repetitions, contenders taking turns, samples sized for fast calls."""

import time

import numpy as np
import pytest

from normlab.timing import interleaved_medians, median_seconds, paired_samples, time_passes


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


def test_pass_times_measure_what_ran():


    times = time_passes({"sleepy": (lambda: time.sleep(0.002), lambda _: time.sleep(0.004))}, repeats=3)["sleepy"]
    assert 0.002 <= times.forward < 0.05 and 0.004 <= times.backward < 0.05
    assert 0.006 <= times.best_total <= 3 * times.total


def test_the_settle_pause_comes_before_every_turn_and_is_not_timed():


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


def test_median_seconds_is_the_median_of_the_timed_calls_after_the_warmup():
    delays = iter([0.05, 0.001, 0.03, 0.001])  # the first call is the untimed warm-up

    def fn():
        time.sleep(next(delays))

    assert 0.001 <= median_seconds(fn, repeats=3, warmup=1) < 0.02  # the median of 0.001, 0.03, 0.001


def test_interleaved_medians_alternate_the_sides_and_time_each_on_the_wall_and_cpu_clocks():
    calls = []

    def ours():
        calls.append("ours")
        time.sleep(0.002)  # wall time, little CPU

    def theirs():
        calls.append("theirs")
        end = time.perf_counter() + 0.004
        while time.perf_counter() < end:  # busy: CPU time too
            pass

    times = interleaved_medians({"ours": ours, "theirs": theirs}, repeats=3, warmup=1, settle=0.0)
    assert list(times) == ["ours", "theirs"]
    mine, other = times.values()
    assert calls == ["ours", "theirs"] * 4
    assert 0.002 <= mine.wall < 0.05 and mine.cpu < mine.wall
    assert 0.004 <= other.wall < 0.05 and other.cpu > 0


def test_paired_samples_repeat_fast_calls_to_fill_a_sample_and_alternate():
    calls = []
    samples = paired_samples((lambda: calls.append("a"), lambda: time.sleep(0.003) or calls.append("b")),
                             repeats=2, min_sample=2e-3)
    assert [len(s) for s in samples] == [2, 2]
    assert calls.count("b") == 3  # the sizing call, then one call per sample: it lasts longer than min_sample
    assert calls.count("a") > 3  # a fast call is repeated within each sample
    assert samples[0][0] < 1e-3 and min(samples[1]) >= 3e-3
