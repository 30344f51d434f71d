"""The simple layers: linear, activations, dropout, softmax cross-entropy."""

import numpy as np
import pytest

from normlab import functional as F
from normlab.gradcheck import check_layer, numerical_gradient, relative_error

torch = pytest.importorskip("torch", reason="PyTorch is the test oracle: pip install 'normlab[test]'")


def test_linear_gradients_match_numerical_and_torch(rng):
    x, w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal((5, 6)), rng.standard_normal(5)
    errors = check_layer(F.linear_forward, F.linear_backward, {"x": x, "weight": w, "bias": b}, rng=rng)
    assert max(errors.values()) < 1e-8, errors
    out, _ = F.linear_forward(x, w, b)
    expected = torch.nn.functional.linear(torch.tensor(x.reshape(4, 6)), torch.tensor(w), torch.tensor(b))
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_gradients_match_numerical(rng, name):
    forward, backward = getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward")
    x = rng.standard_normal((4, 5)) * 3
    x[np.abs(x) < 1e-3] = 0.5  # keep away from relu's kink, where the numerical derivative is meaningless
    errors = check_layer(forward, backward, {"x": x}, rng=rng)
    assert errors["x"] < 1e-8


def test_sigmoid_is_stable_for_large_inputs():
    out, _ = F.sigmoid_forward(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])


def test_dropout_is_inverted_and_reproducible():
    x = np.ones((2000, 50))
    out1, mask1 = F.dropout_forward(x, 0.3, np.random.default_rng(7))
    out2, _ = F.dropout_forward(x, 0.3, np.random.default_rng(7))
    np.testing.assert_array_equal(out1, out2)
    assert abs((out1 == 0).mean() - 0.3) < 0.01
    assert abs(out1.mean() - 1.0) < 0.01  # survivors are scaled by 1 / (1 - p)
    np.testing.assert_array_equal(F.dropout_backward(np.ones_like(x), mask1), mask1)
    same, mask = F.dropout_forward(x, 0.3, None, training=False)
    assert same is x and mask is None


def test_softmax_cross_entropy_matches_torch_and_numerical(rng):
    logits, labels = rng.standard_normal((6, 10)) * 5, rng.integers(0, 10, 6)
    loss, dlogits = F.softmax_cross_entropy(logits, labels)
    t_logits = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(labels))
    t_loss.backward()
    assert abs(loss - t_loss.item()) < 1e-12
    assert relative_error(dlogits, t_logits.grad.numpy()) < 1e-12
    numerical = numerical_gradient(lambda z: F.softmax_cross_entropy(z, labels)[0], logits)
    assert relative_error(dlogits, numerical) < 1e-8


def test_softmax_cross_entropy_does_not_overflow():
    loss, dlogits = F.softmax_cross_entropy(np.array([[1e4, 0.0, -1e4]]), np.array([2]))
    assert loss == pytest.approx(2e4) and np.isfinite(dlogits).all()


def test_initial_loss_of_uniform_scores_is_log_k():
    loss, _ = F.softmax_cross_entropy(np.zeros((5, 10)), np.arange(5))
    assert loss == pytest.approx(np.log(10))
