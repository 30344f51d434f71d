"""The gradient checker itself: it must find real errors, not only agree with correct code."""

import numpy as np
import pytest

from normlab.gradcheck import (
    check_layer,
    max_elementwise_relative_error,
    numerical_gradient,
    relative_error,
)


def test_numerical_gradient_of_a_known_function(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(numerical_gradient(lambda v: np.sum(v**3), x), 3 * x**2, rtol=1e-8)
    dout = rng.standard_normal((3, 4))
    np.testing.assert_allclose(numerical_gradient(np.sin, x, dout), np.cos(x) * dout, rtol=1e-8)


def test_input_is_restored_exactly(rng):
    x = rng.standard_normal(5)
    before = x.copy()
    numerical_gradient(lambda v: float(np.sum(v**2)), x)
    np.testing.assert_array_equal(x, before)


def test_check_layer_catches_a_wrong_backward(rng):
    def forward(x):
        return x**2, x

    def wrong_backward(dout, x):
        return (dout * x,)  # missing the factor 2

    errors = check_layer(forward, wrong_backward, {"x": rng.standard_normal(4) + 3}, rng=rng)
    assert errors["x"] > 0.1


def test_relative_errors():
    assert relative_error(np.ones(3), np.ones(3)) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([1.0]), np.array([-1.0])) == pytest.approx(1.0)
    assert max_elementwise_relative_error(np.array([1.0, 1e-9]), np.array([1.0, 3e-9])) == pytest.approx(0.2, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        relative_error(np.ones(2), np.ones(3))


def test_numerical_gradient_rejects_integers_and_wrong_dout():
    with pytest.raises(TypeError, match="floating-point"):
        numerical_gradient(np.sum, np.arange(3))
    with pytest.raises(ValueError, match="dout must have"):
        numerical_gradient(np.sin, np.ones(3), np.ones(2))
