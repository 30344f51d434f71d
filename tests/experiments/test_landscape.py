"""The landscape measures along the gradient (Santurkar et al. 2018, Fig. 4) on a quadratic whose smoothness is
known, to float64 rounding; and a model's loss as a function of its flattened parameters."""

import numpy as np
import pytest

from normlab.experiments.landscape import direction_measures, model_objective
from normlab.functional import softmax_cross_entropy
from normlab.gradcheck import numerical_gradient, relative_error
from normlab.models import FullyConnectedNet


def quadratic(seed=0, dim=7):
    """L(w) = 0.5 w^T A w with A symmetric positive definite, eigenvalues 0.5 .. 20."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = np.linspace(0.5, 20.0, dim)
    a = (q * eigenvalues) @ q.T

    def objective(w):
        return 0.5 * w @ a @ w, a @ w

    return a, q, eigenvalues, objective, rng.standard_normal(dim)


def test_the_measures_on_a_quadratic_equal_their_closed_forms():
    a, _, eigenvalues, objective, w = quadratic()
    etas = [0.01, 0.02, 0.05, 0.1]
    m = direction_measures(objective, w, etas)
    g = a @ w
    ag = a @ g
    for i, eta in enumerate(etas):
        # L(w - eta g) = L(w) - eta g.g + 0.5 eta^2 g.A.g (w.A.g = g.g since A is symmetric)
        expected = 0.5 * w @ a @ w - eta * g @ g + 0.5 * eta**2 * g @ ag
        np.testing.assert_allclose(m.losses[i], expected, rtol=1e-13)
    np.testing.assert_allclose(m.loss, 0.5 * w @ a @ w, rtol=1e-15)
    np.testing.assert_allclose(m.gradient_norm, np.linalg.norm(g), rtol=1e-15)
    # grad L(w - eta g) - grad L(w) = -eta A g: its norm is eta ||A g||, over the distance eta ||g||.
    np.testing.assert_allclose(m.gradient_changes, np.array(etas) * np.linalg.norm(ag), rtol=1e-12)
    np.testing.assert_allclose(m.distances, np.array(etas) * np.linalg.norm(g), rtol=1e-15)
    beta = np.linalg.norm(ag) / np.linalg.norm(g)
    np.testing.assert_allclose(m.smoothness, beta, rtol=1e-12)
    np.testing.assert_allclose(m.effective_beta, beta, rtol=1e-12)
    assert eigenvalues[0] < m.effective_beta < eigenvalues[-1]  # a Rayleigh-like quotient: between the extremes
    s = m.summary()
    assert s["loss_min"] == m.losses.min() and s["loss_max"] == m.losses.max()
    assert s["gradient_change_max"] == m.gradient_changes[-1] and s["effective_beta"] == m.effective_beta


@pytest.mark.parametrize("k", [0, 3, 6])
def test_along_an_eigenvector_the_effective_beta_is_its_eigenvalue(k):
    _, q, eigenvalues, objective, _ = quadratic(seed=1)
    m = direction_measures(objective, 2.0 * q[:, k], [0.01, 0.03])
    np.testing.assert_allclose(m.smoothness, eigenvalues[k], rtol=1e-12)
    # and the loss along it is exactly 0.5 lambda (1 - eta lambda)^2 ||w||^2
    np.testing.assert_allclose(m.losses, 0.5 * eigenvalues[k] * (1 - np.array([0.01, 0.03]) * eigenvalues[k]) ** 2 * 4,
                               rtol=1e-12)


def test_bad_inputs_are_named():
    _, _, _, objective, w = quadratic()
    with pytest.raises(ValueError, match=r"step_sizes must be a non-empty sequence of positive numbers, got \[0.1, 0.0\]"):
        direction_measures(objective, w, [0.1, 0.0])
    with pytest.raises(ValueError, match="step_sizes must be a non-empty"):
        direction_measures(objective, w, [])
    with pytest.raises(ValueError, match=r"w must be a flat vector \(P,\), got shape \(7, 1\)"):
        direction_measures(objective, w[:, None], [0.1])
    with pytest.raises(ValueError, match="the gradient at w is zero"):
        direction_measures(objective, np.zeros(7), [0.1])


@pytest.mark.parametrize("normalization", ["none", "batch"])
def test_a_models_objective_is_its_training_loss_and_gradient_and_changes_nothing(normalization):
    rng = np.random.default_rng(2)
    model = FullyConnectedNet(6, (5, 4), 3, normalization=normalization, rng=rng, dtype=np.float64)
    x, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    before = model.state_dict()
    w, objective = model_objective(model, x, y)
    assert w.shape == (sum(p.data.size for p in model.parameters()),) and w.dtype == np.float64
    loss, grad = objective(w)
    np.testing.assert_allclose(loss, softmax_cross_entropy(model.forward(x), y)[0], rtol=1e-15)
    model.load_state_dict(before)  # that forward moved the running statistics
    point = w + 0.1 * rng.standard_normal(w.shape)
    _, grad = objective(point)
    numerical = numerical_gradient(lambda v: objective(v)[0], point.copy())
    assert relative_error(grad, numerical) < 1e-7
    after = model.state_dict()
    for name, value in before.items():  # weights and running statistics as they were
        np.testing.assert_array_equal(after[name], value)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match=rf"the model's {w.size} parameters \(P,\), got shape \(3,\)"):
        objective(np.zeros(3))
