"""The copy bandwidth, the yardstick of the bench's "% limit"."""

import numpy as np

from normlab.bench.bandwidth import Bandwidth, copy_bandwidth


def test_the_limit_is_the_best_copy():
    assert Bandwidth(30.0, 55.0, 2).limit == 55.0
    assert Bandwidth(30.0, None, 1).limit == 30.0


def test_copy_bandwidth_measures_both_copies():
    bw = copy_bandwidth(1 << 20, repeats=2, threads=1)
    assert bw.numpy_one_thread > 0 and np.isfinite(bw.numpy_one_thread)
    assert bw.parallel is None or bw.parallel > 0
