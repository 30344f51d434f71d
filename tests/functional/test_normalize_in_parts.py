"""The core's two halves (moments + normalize_with_stats; backward_sums + normalize_backward_from_sums)
compose to normalize and normalize_backward."""

import numpy as np
import pytest

from normlab.functional.normalize import (
    backward_sums,
    moments,
    normalize,
    normalize_backward,
    normalize_backward_from_sums,
    normalize_with_stats,
)

CASES = [((7, 5), (0,)), ((4, 3, 5, 5), (0, 2, 3)), ((6, 8), (1,))]


@pytest.mark.parametrize("shape, axes", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_with_its_own_moments_is_normalize(rng, shape, axes, dtype):
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    whole = normalize(x, axes, 1e-5)
    mean, var = moments(x, axes)
    np.testing.assert_array_equal(mean, whole.mean)
    np.testing.assert_array_equal(var, whole.var)
    halves = normalize_with_stats(x, mean, var, 1e-5)
    assert halves.xhat.dtype == halves.rstd.dtype == dtype
    np.testing.assert_array_equal(halves.rstd, whole.rstd)
    np.testing.assert_allclose(halves.xhat, whole.xhat, rtol=0, atol=10 * np.finfo(dtype).eps * 100)


def test_normalize_with_float64_statistics_keeps_the_input_dtype(rng):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    out = normalize_with_stats(x, np.zeros((1, 3)), np.ones((1, 3)), 1e-5)
    assert out.xhat.dtype == out.rstd.dtype == np.float32
    np.testing.assert_allclose(out.xhat, x / np.sqrt(1 + 1e-5), rtol=1e-6)


@pytest.mark.parametrize("shape, axes", CASES)
def test_backward_from_its_own_sums_is_normalize_backward(rng, shape, axes):
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    forward = normalize(x, axes, 1e-5)
    whole = normalize_backward(g, forward.xhat, forward.rstd, axes)
    g_sum, gxhat_sum = backward_sums(g, forward.xhat, axes)
    np.testing.assert_array_equal(g_sum, whole.g_sum)
    np.testing.assert_array_equal(gxhat_sum, whole.gxhat_sum)
    m = x.size // g_sum.size
    dx = normalize_backward_from_sums(g, forward.xhat, forward.rstd, g_sum, gxhat_sum, m)
    np.testing.assert_array_equal(dx, whole.dx)
