"""Splitting a batch over threads: blocks cover the batch in order, BLAS is held to one thread meanwhile and
restored, and a block's error surfaces after every block has finished."""

import threading
import time

import pytest

from normlab.blas import blas_threads, limited_blas_threads
from normlab.parallel import split_over_threads, worker_count


def test_blocks_cover_the_range_in_order_on_separate_threads():
    if blas_threads() is None or blas_threads() < 2:
        pytest.skip("needs OpenBLAS with 2 or more threads")
    with limited_blas_threads(2):
        seen = split_over_threads(lambda start, stop: (start, stop, threading.get_ident(), blas_threads()), 7)
    assert [(start, stop) for start, stop, *_ in seen] == [(0, 3), (3, 7)]
    assert len({ident for *_, ident, _ in seen}) == 2
    assert all(inside == 1 for *_, inside in seen)
    assert blas_threads() >= 2


def test_one_thread_or_one_item_runs_in_the_caller():
    with limited_blas_threads(1):
        assert worker_count() == 1 or blas_threads() is None
        assert split_over_threads(lambda start, stop: (start, stop, threading.get_ident()), 5) == [
            (0, 5, threading.get_ident())]
    assert split_over_threads(lambda start, stop: (start, stop), 1) == [(0, 1)]


def test_an_error_in_a_block_is_raised_after_every_block_finished():
    if blas_threads() is None or blas_threads() < 2:
        pytest.skip("needs OpenBLAS with 2 or more threads")
    finished = []

    def work(start, stop):
        if start == 0:
            raise ValueError("block 0 failed")
        time.sleep(0.05)
        finished.append(start)
        return start

    before = blas_threads()
    with limited_blas_threads(2), pytest.raises(ValueError, match="block 0 failed"):
        split_over_threads(work, 4)
    assert finished == [2]
    assert blas_threads() == before


def _conv_in_child(queue):
    import numpy as np

    from normlab import functional as F

    x = np.ones((4, 2, 8, 8), np.float32)
    queue.put(float(F.conv2d_forward(x, np.ones((3, 2, 3, 3), np.float32), None, 1, 1)[0].sum()))


def test_a_forked_child_splits_batches_on_threads_of_its_own():
    """The parent's worker threads do not survive a fork; a child that reused their pool would wait forever."""
    import multiprocessing

    import numpy as np

    from normlab import functional as F

    x = np.ones((4, 2, 8, 8), np.float32)
    with limited_blas_threads(2):
        expected = float(F.conv2d_forward(x, np.ones((3, 2, 3, 3), np.float32), None, 1, 1)[0].sum())
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_conv_in_child, args=(queue,))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung in split_over_threads")
    assert queue.get(timeout=5) == expected
