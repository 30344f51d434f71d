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
