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


@pytest.mark.parametrize("dtype, magnitude", [(np.float32, 1e30), (np.float64, 1e300)])
def test_moments_of_data_beyond_the_fast_path_are_normalize_statistics(dtype, magnitude):
    """Data whose sums overflow x's dtype: moments (the wide pass, without forming xhat) gives normalize's
    mean and var exactly, the variance inf where it is beyond the dtype."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((6, 4, 3)) * magnitude).astype(dtype)
    x[:, 1] /= dtype(magnitude)  # a group far from overflowing, next to ones that do
    mean, var = moments(x, (0, 2))
    expected = normalize(x, (0, 2), 1e-5)
    assert mean.dtype == var.dtype == dtype
    np.testing.assert_array_equal(mean, expected.mean)
    np.testing.assert_array_equal(var, expected.var)
    assert np.isinf(var[:, 0]).all() and np.isfinite(var[:, 1]).all()


def test_half_precision_normalize_backward_is_the_float32_one_rounded():
    rng = np.random.default_rng(5)
    g, xhat = (rng.standard_normal((8, 3, 4)).astype(np.float16) for _ in range(2))
    scale = rng.uniform(0.5, 1.5, (1, 3, 1)).astype(np.float32)
    half = normalize_backward(g, xhat, scale, (0, 2))
    single = normalize_backward(g.astype(np.float32), xhat.astype(np.float32), scale, (0, 2))
    assert half.dx.dtype == np.float16 and half.g_sum.dtype == half.gxhat_sum.dtype == np.float32
    np.testing.assert_array_equal(half.dx, single.dx.astype(np.float16))
    np.testing.assert_array_equal(half.g_sum, single.g_sum)
    np.testing.assert_array_equal(half.gxhat_sum, single.gxhat_sum)
