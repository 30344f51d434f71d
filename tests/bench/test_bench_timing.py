"""The timing helpers: medians of interleaved repetitions, and the bandwidth limit."""

import numpy as np

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
