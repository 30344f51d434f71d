"""Running statistics under both conventions, evaluation mode, and numerical robustness."""

import numpy as np
import pytest

from normlab import functional as F


@pytest.mark.parametrize("convention", ["pytorch", "keras"])
def test_running_statistics_follow_the_documented_rule(rng, convention):
    x = rng.standard_normal((10, 3, 2, 2)) * 2 + 1
    running_mean, running_var = rng.standard_normal(3), rng.random(3) + 0.5
    expected_mean = 0.7 * running_mean + 0.3 * x.mean(axis=(0, 2, 3))
    ddof = 1 if convention == "pytorch" else 0
    expected_var = 0.7 * running_var + 0.3 * x.var(axis=(0, 2, 3), ddof=ddof)
    F.batchnorm_forward(x, np.ones(3), np.zeros(3), running_mean, running_var, momentum=0.3, convention=convention)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-14)
    np.testing.assert_allclose(running_var, expected_var, rtol=1e-14)


def test_evaluation_uses_running_statistics_and_leaves_them_alone(rng):
    x = rng.standard_normal((4, 3))
    running_mean, running_var = np.array([1.0, -1.0, 0.5]), np.array([4.0, 0.25, 1.0])
    gamma, beta = np.array([2.0, 1.0, 0.5]), np.array([0.0, 1.0, -1.0])
    out, _ = F.batchnorm_forward(x, gamma, beta, running_mean, running_var, training=False, eps=0.0 + 1e-12)
    np.testing.assert_allclose(out, gamma * (x - running_mean) / np.sqrt(running_var) + beta, rtol=1e-10)
    np.testing.assert_array_equal(running_mean, [1.0, -1.0, 0.5])
    np.testing.assert_array_equal(running_var, [4.0, 0.25, 1.0])


@pytest.mark.parametrize("shape", [(4096, 8), (64, 8, 8, 8)])
def test_float32_variance_of_data_far_from_zero_is_accurate(rng, shape):
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
    out, cache = F.batchnorm_forward(x, np.ones(8, np.float32), np.zeros(8, np.float32))
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    exact = x.astype(np.float64).var(axis=axes)  # the variance of the float32 values actually stored
    np.testing.assert_allclose(cache.var.reshape(-1), exact, rtol=1e-3)
    assert out.dtype == np.float32
    # Normalized output has unit variance up to eps's contribution, not garbage from cancellation.
    np.testing.assert_allclose(out.astype(np.float64).var(axis=axes), exact / (exact + 1e-5), rtol=1e-2)


@pytest.mark.parametrize("forward, backward", [
    (lambda x, g, b: F.batchnorm_forward(x, g, b), F.batchnorm_backward),
    (lambda x, g, b: F.batchnorm_forward(x, g, b, backend="numpy"), F.batchnorm_backward_staged),
    (lambda x, g, b: F.layernorm_forward(x, g, b), F.layernorm_backward),
    (lambda x, g, b: F.groupnorm_forward(x, g, b, 1), F.groupnorm_backward),
])
def test_constant_input_gives_finite_output_and_gradients(rng, forward, backward):
    x = np.full((4, 3, 2, 2), 7.0, np.float32)
    g, b = np.full(3, 2.0, np.float32), np.full(3, 0.5, np.float32)
    out, cache = forward(x, g, b)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)  # xhat = 0, so out = beta
    dout = rng.standard_normal(x.shape).astype(np.float32)
    dx, dgamma, dbeta = backward(dout, cache)
    assert all(np.isfinite(a).all() for a in (dx, dgamma, dbeta))
    np.testing.assert_allclose(dgamma, 0, atol=1e-6)  # sum(dout * xhat) with xhat = 0
    np.testing.assert_allclose(dbeta, dout.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_dtype_is_preserved(rng):
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((5, 4)).astype(dtype)
        out, cache = F.batchnorm_forward(x, np.ones(4), np.zeros(4))  # float64 params are cast to x's dtype
        dx, dgamma, dbeta = F.batchnorm_backward(np.ones_like(out), cache)
        assert out.dtype == dx.dtype == dgamma.dtype == dbeta.dtype == dtype
