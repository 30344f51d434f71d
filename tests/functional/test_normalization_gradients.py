"""Every normalization backward against numerical gradients (float64), and the staged backward against
the closed form."""

import numpy as np
import pytest

from normlab import functional as F
from normlab.gradcheck import check_layer, relative_error

TOL = 1e-7


def _affine(rng, shape):
    return {"gamma": rng.standard_normal(shape), "beta": rng.standard_normal(shape)}


# With N = 2 (one value per channel on each side of the mean) xhat is +-sqrt(var / (var + eps)), almost
# independent of x, and dx is of order eps / var: nearly all cancellation. A large eps keeps the gradient
# well conditioned so the check measures the backward, not rounding.
@pytest.mark.parametrize("shape, eps", [((2, 3), 1.0), ((7, 4), 1e-5), ((2, 3, 4, 5), 1e-5), ((3, 2, 1, 3), 1e-3)])
@pytest.mark.parametrize("backward", [F.batchnorm_backward, F.batchnorm_backward_staged])
def test_batchnorm_training_gradients_match_numerical(rng, shape, eps, backward):
    x = rng.standard_normal(shape) * 3 + 2
    errors = check_layer(lambda x, gamma, beta: F.batchnorm_forward(x, gamma, beta, eps=eps), backward,
                         {"x": x, **_affine(rng, shape[1])}, rng=rng)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 4)])
@pytest.mark.parametrize("backward", [F.batchnorm_backward, F.batchnorm_backward_staged])
def test_batchnorm_evaluation_gradients_match_numerical(rng, shape, backward):
    c = shape[1]
    running_mean, running_var = rng.standard_normal(c), rng.random(c) + 0.5

    def forward(x, gamma, beta):
        return F.batchnorm_forward(x, gamma, beta, running_mean, running_var, training=False)

    errors = check_layer(forward, backward, {"x": rng.standard_normal(shape), **_affine(rng, c)}, rng=rng)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shape, per_channel", [((4, 6), False), ((3, 2, 3, 4), False), ((3, 2, 3, 4), True)])
@pytest.mark.parametrize("backward", [F.layernorm_backward, F.layernorm_backward_staged])
def test_layernorm_gradients_match_numerical(rng, shape, per_channel, backward):
    param_shape = (shape[1],) if per_channel else shape[1:]
    x = rng.standard_normal(shape) * 2 - 1
    errors = check_layer(lambda x, gamma, beta: F.layernorm_forward(x, gamma, beta), backward,
                         {"x": x, **_affine(rng, param_shape)}, rng=rng)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 3), 1), ((2, 6, 3, 3), 2), ((2, 6, 3, 3), 6), ((3, 4), 2)])
def test_groupnorm_gradients_match_numerical(rng, shape, groups):
    x = rng.standard_normal(shape) + 1
    errors = check_layer(lambda x, gamma, beta: F.groupnorm_forward(x, gamma, beta, groups), F.groupnorm_backward,
                         {"x": x, **_affine(rng, shape[1])}, rng=rng)
    assert max(errors.values()) < TOL, errors


def test_instancenorm_gradients_match_numerical(rng):
    errors = check_layer(lambda x, gamma, beta: F.instancenorm_forward(x, gamma, beta), F.instancenorm_backward,
                         {"x": rng.standard_normal((2, 3, 2, 3)), **_affine(rng, 3)}, rng=rng)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shape", [(2, 5), (64, 10), (4, 3, 5, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_staged_equals_simplified(rng, shape, training):
    c = shape[1]
    x = rng.standard_normal(shape) * 5 + 3
    out, cache = F.batchnorm_forward(x, rng.standard_normal(c), rng.standard_normal(c),
                                     rng.standard_normal(c), rng.random(c) + 0.1, training=training)
    dout = rng.standard_normal(shape)
    (dx, dgamma, dbeta), (sdx, sdgamma, sdbeta) = F.batchnorm_backward(dout, cache), F.batchnorm_backward_staged(dout, cache)
    # dx is measured against its natural scale, dout * gamma * rstd: with N = 2 dx itself is ~0 (see above).
    scale = np.linalg.norm(dout * cache.gamma * cache.rstd)
    assert np.linalg.norm(dx - sdx) / scale < 1e-12
    assert relative_error(dgamma, sdgamma) < 1e-12
    assert relative_error(dbeta, sdbeta) < 1e-12


@pytest.mark.parametrize("shape, param_shape", [((6, 7), (7,)), ((3, 4, 2, 2), (4, 2, 2)), ((3, 4, 2, 2), (4,))])
def test_layernorm_staged_equals_simplified(rng, shape, param_shape):
    out, cache = F.layernorm_forward(rng.standard_normal(shape), rng.standard_normal(param_shape),
                                     rng.standard_normal(param_shape))
    dout = rng.standard_normal(shape)
    for simplified, staged in zip(F.layernorm_backward(dout, cache), F.layernorm_backward_staged(dout, cache)):
        assert relative_error(simplified, staged) < 1e-12


def test_groupnorm_with_one_group_is_layernorm_with_per_channel_affine(rng):
    x = rng.standard_normal((3, 4, 2, 5))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    out_g, cache_g = F.groupnorm_forward(x, gamma, beta, 1)
    out_l, cache_l = F.layernorm_forward(x, gamma, beta)
    np.testing.assert_allclose(out_g, out_l, rtol=1e-13, atol=1e-13)
    dout = rng.standard_normal(x.shape)
    for a, b in zip(F.groupnorm_backward(dout, cache_g), F.layernorm_backward(dout, cache_l)):
        assert relative_error(a, b) < 1e-13


def test_batchnorm_output_is_normalized_per_channel(rng):
    x = rng.standard_normal((32, 3, 4, 4)) * np.array([1.0, 10.0, 0.1])[None, :, None, None] + 5
    out, _ = F.batchnorm_forward(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1 / (1 + 1e-5 / x.var(axis=(0, 2, 3))), rtol=1e-12)
