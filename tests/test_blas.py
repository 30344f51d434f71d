"""Setting OpenBLAS's thread count at run time, and restoring it."""

import numpy as np
import pytest

from normlab.blas import blas_threads, limited_blas_threads, set_blas_threads


def test_limited_blas_threads_sets_and_restores_the_thread_count():
    before = blas_threads()
    if before is None:
        pytest.skip("NumPy does not use OpenBLAS here")
    with limited_blas_threads(1) as inside:
        assert inside == 1 == blas_threads()
        a = np.ones((200, 200))
        np.testing.assert_allclose(a @ a, 200.0)
    assert blas_threads() == before


def test_limited_blas_threads_restores_after_an_error_and_checks_n():
    before = blas_threads()
    with pytest.raises(RuntimeError, match="inside"), limited_blas_threads(1):
        raise RuntimeError("inside")
    assert blas_threads() == before
    with pytest.raises(ValueError, match="n must be a positive integer number of threads, got 0"), \
            limited_blas_threads(0):
        pass


def test_set_blas_threads_sets_the_count_for_the_rest_of_the_process_and_checks_n():
    before = blas_threads()
    if before is None:
        pytest.skip("NumPy does not use OpenBLAS here")
    try:
        assert set_blas_threads(1) == 1 == blas_threads()
        a = np.ones((200, 200))
        np.testing.assert_allclose(a @ a, 200.0)
    finally:
        set_blas_threads(before)
    assert blas_threads() == before
    with pytest.raises(ValueError, match="n must be a positive integer number of threads, got 0"):
        set_blas_threads(0)
