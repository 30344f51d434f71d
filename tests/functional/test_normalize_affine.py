"""The one parametric core: normalize over any statistics axes, affine over any parameter axes, its
backward checked numerically, the staged walk equal to it, given statistics as constants, and its one
cache type refusing another operation's cache."""

import numpy as np
import pytest

from normlab.functional.normalize import NormCache, normalize_affine, normalize_affine_backward
from normlab.functional.staged import staged_backward_of
from normlab.gradcheck import check_layer, relative_error

# (shape, stat_axes, param_axes): batch norm, layer norm with a per-channel affine, a group whose gamma
# varies inside it, ghost-like chunks (gamma constant per group but shared across groups)
MAPPINGS = [
    ((5, 3), (0,), (0,)),
    ((3, 4, 2, 2), (1, 2, 3), (0, 2, 3)),
    ((4, 2, 3, 2), (2, 3), (0, 3)),
    ((2, 3, 4, 2), (1, 3), (0, 1, 3)),
]


def _params(shape, param_axes, rng):
    param_shape = tuple(1 if a in param_axes else n for a, n in enumerate(shape))
    return rng.standard_normal(param_shape), rng.standard_normal(param_shape)


def _forward(stat_axes, param_axes, **kwargs):
    def forward(x, gamma, beta):
        return normalize_affine(x, gamma, beta, stat_axes, param_axes, 1e-5, forward="core", **kwargs)
    return forward


def _backward(dout, cache):
    return normalize_affine_backward(dout, cache, "core_backward", "core")


@pytest.mark.parametrize("shape, stat_axes, param_axes", MAPPINGS)
def test_gradients_of_any_axis_mapping_match_numerical_gradients(shape, stat_axes, param_axes):
    rng = np.random.default_rng(0)
    gamma, beta = _params(shape, param_axes, rng)
    inputs = {"x": rng.standard_normal(shape) * 2 + 3, "gamma": gamma, "beta": beta}
    errors = check_layer(_forward(stat_axes, param_axes), _backward, inputs, rng=rng)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("shape, stat_axes, param_axes", MAPPINGS)
def test_output_is_normalized_over_the_statistics_axes(shape, stat_axes, param_axes):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 5 - 2
    gamma, _ = _params(shape, param_axes, rng)
    out, cache = _forward(stat_axes, param_axes)(x, np.ones_like(gamma), np.zeros_like(gamma))
    np.testing.assert_allclose(out.mean(axis=stat_axes), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=stat_axes), 1 / (1 + 1e-5 / x.var(axis=stat_axes)), rtol=1e-10)
    assert isinstance(cache, NormCache) and cache.forward == "core"


@pytest.mark.parametrize("shape, stat_axes, param_axes", MAPPINGS)
def test_staged_walk_equals_the_closed_form(shape, stat_axes, param_axes):
    rng = np.random.default_rng(2)
    gamma, beta = _params(shape, param_axes, rng)
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    _, cache = _forward(stat_axes, param_axes)(x, gamma, beta)
    for staged, closed in zip(staged_backward_of(dout, cache, "staged", "core"), _backward(dout, cache)):
        assert relative_error(staged, closed) < 1e-12


def test_given_statistics_are_constants_of_the_backward():
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    gamma, beta = rng.standard_normal((1, 4)), rng.standard_normal((1, 4))
    mean, var = rng.standard_normal((1, 4)), rng.uniform(0.5, 2, (1, 4))
    out, cache = _forward((0,), (0,), stats=(mean, var))(x, gamma, beta)
    rstd = 1 / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(out, gamma * (x - mean) * rstd + beta, rtol=1e-14)
    dx, dgamma, dbeta = _backward(dout, cache)
    np.testing.assert_allclose(dx, dout * gamma * rstd, rtol=1e-14)
    np.testing.assert_allclose(dgamma, (dout * (x - mean) * rstd).sum(axis=0, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(dbeta, dout.sum(axis=0, keepdims=True), rtol=1e-13)


def test_a_backward_refuses_a_cache_made_by_another_forward_and_a_dout_of_another_shape():
    x = np.random.default_rng(4).standard_normal((4, 3))
    _, cache = _forward((0,), (0,))(x, np.ones((1, 3)), np.zeros((1, 3)))
    with pytest.raises(TypeError, match="^layer_backward: cache must be the cache returned by layer_forward, "
                                        "got a NormCache made by core$"):
        normalize_affine_backward(x, cache, "layer_backward", "layer_forward")
    with pytest.raises(ValueError, match=r"dout must have shape \(4, 3\)"):
        _backward(np.ones((3, 4)), cache)
