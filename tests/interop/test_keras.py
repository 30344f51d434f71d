"""normlab -> Keras 3 (TensorFlow) twins: the same forward (train and eval), gradients and, with the
variance convention Keras uses, running statistics after SGD steps; channels-last layouts; what differs
under the PyTorch convention; clear errors."""

import numpy as np
import pytest

from normlab import nn
from normlab.interop import state_dict_from_keras, to_keras

TOLERANCE = 1e-4
FLOAT64 = 1e-12
LR = 0.1


def nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def keras_step(tf, model, twin, x, labels):
    """Cross-entropy of the twin in training mode on x: (loss, dx in normlab layout, {normlab name: grad})."""
    xt = tf.constant(nhwc(x))
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = twin(xt, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    variables = twin.trainable_variables
    grads = tape.gradient(loss, [xt, *variables])
    dx = grads[0].numpy()
    dx = dx.transpose(0, 3, 1, 2) if dx.ndim == 4 else dx
    by_path = {v.path: g for v, g in zip(variables, grads[1:])}
    return float(loss), dx, state_dict_from_keras(model, twin, by_path), variables, grads[1:]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_matches_keras(keras, make_model, make_batch, assert_close, kind, norm, training):
    model, shape = make_model(kind, norm)
    model.train(training)
    x, _ = make_batch(shape, seed=0)
    twin = to_keras(model, shape)
    assert twin.input_shape == (None, *nhwc(x).shape[1:])
    assert_close(model(x), twin(nhwc(x), training=training).numpy(), TOLERANCE, "output")


def test_gradients_of_every_parameter_match_keras(tf, keras, make_model, make_batch, normlab_step, assert_close,
                                                  assert_grads_close, kind, norm):
    model, shape = make_model(kind, norm)
    x, labels = make_batch(shape, seed=0)
    twin = to_keras(model, shape)
    loss, dx, grads = normlab_step(model, x, labels)
    k_loss, k_dx, k_grads, _, _ = keras_step(tf, model, twin, x, labels)
    assert loss == pytest.approx(k_loss, rel=TOLERANCE)
    assert_close(dx, k_dx, TOLERANCE, "dx")
    assert_grads_close(grads, k_grads, TOLERANCE)


def sgd_three_steps(tf, model, twin, shape, make_batch, normlab_step):
    for step in range(3):
        x, labels = make_batch(shape, seed=step)
        normlab_step(model, x, labels)
        for p in model.parameters():
            p.data -= LR * p.grad
        _, _, _, variables, grads = keras_step(tf, model, twin, x, labels)
        for v, g in zip(variables, grads):
            v.assign_sub(LR * g)


def test_three_sgd_steps_match_keras_with_its_variance_convention(tf, keras, make_model, make_batch, normlab_step,
                                                                  assert_close, kind, norm):
    """Keras stores the biased batch variance: normlab's convention="keras" matches it exactly."""
    model, shape = make_model(kind, norm, convention="keras")
    twin = to_keras(model, shape)
    sgd_three_steps(tf, model, twin, shape, make_batch, normlab_step)
    ours, theirs = model.state_dict(), state_dict_from_keras(model, twin)
    assert set(ours) - set(theirs) == {n for n in ours if n.endswith("num_batches_tracked")}
    before = make_model(kind, norm)[0].state_dict()
    for name in theirs:
        assert not np.allclose(ours[name], before[name]) or name.endswith(".bias"), f"{name} did not move"
        assert_close(ours[name], theirs[name], TOLERANCE, name)


def test_pytorch_convention_running_var_is_the_one_thing_that_differs(tf, keras, make_model, make_batch, normlab_step,
                                                                      assert_close, kind):
    """normlab's default (PyTorch's) running_var averages the unbiased batch variance; Keras averages the
    biased one. Predictions in evaluation use the copied value and agree; after training steps only the
    running variances differ, each batch's contribution by the factor M / (M - 1)."""
    model, shape = make_model(kind, "batch", convention="pytorch")
    twin = to_keras(model, shape)
    sgd_three_steps(tf, model, twin, shape, make_batch, normlab_step)
    ours, theirs = model.state_dict(), state_dict_from_keras(model, twin)
    for name in theirs:
        if name.endswith("running_var"):
            assert relative_gap(ours[name], theirs[name]) > 1e-3, f"{name} should differ"
            assert np.all(ours[name] > theirs[name])  # the unbiased variance is the larger
        else:
            assert_close(ours[name], theirs[name], TOLERANCE, name)
    x, _ = make_batch(shape, seed=5)
    twin_eval = to_keras(model.eval(), shape)  # a fresh copy of the trained statistics predicts the same
    assert_close(model(x), twin_eval(nhwc(x), training=False).numpy(), TOLERANCE, "eval output")


def relative_gap(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_float64_twin_matches_to_rounding(keras, make_model, make_batch, assert_close, norm, training):
    model, shape = make_model("image", norm, dtype=np.float64)
    model.train(training)
    x, _ = make_batch(shape, seed=0, dtype=np.float64)
    twin = to_keras(model, shape)
    assert all(v.dtype == "float64" for v in twin.weights)
    assert_close(model(x), twin(nhwc(x), training=training).numpy(), FLOAT64, "output")


def test_weights_read_back_exactly_in_normlab_layout(keras, make_model, kind, norm):
    model, shape = make_model(kind, norm)
    ours, theirs = model.state_dict(), state_dict_from_keras(model, to_keras(model, shape))
    assert list(theirs) == [n for n in ours if not n.endswith("num_batches_tracked")]
    for name in theirs:
        assert theirs[name].dtype == ours[name].dtype and np.array_equal(theirs[name], ours[name]), name


def test_keras_layers_get_the_translated_hyperparameters(keras, make_model):
    model, shape = make_model("image", "layer")
    bn_model = nn.Sequential(nn.BatchNorm2d(4, eps=1e-3, momentum=0.25), nn.Flatten(), nn.Linear(36, 2, bias=False),
                             nn.BatchNorm1d(2, affine=False), nn.Dropout(0.3))
    twin = to_keras(bn_model, (4, 3, 3))
    bn, permute, dense = twin.get_layer("0"), twin.get_layer("1.channels_first"), twin.get_layer("2")
    assert (bn.momentum, bn.epsilon, bn.axis) == (0.75, 1e-3, -1)
    assert permute.dims == (3, 1, 2) and not dense.use_bias
    assert not twin.get_layer("3").scale and not twin.get_layer("3").center
    assert twin.get_layer("4").rate == 0.3
    ln = to_keras(model, shape).get_layer("0")
    assert ln.axis == [1, 2, 3] and tuple(ln.gamma.shape) == (3, 3, 4)


def test_a_single_layer_model_and_an_inferred_input_shape(keras, assert_close, make_batch):
    layer = nn.Linear(6, 3, rng=np.random.default_rng(0))
    twin = to_keras(layer)
    x, _ = make_batch((6,), seed=0)
    assert twin.get_layer("root").units == 3
    assert_close(layer(x), twin(x).numpy(), TOLERANCE, "output")


def test_errors_name_the_layer_and_the_problem(keras):
    with pytest.raises(ValueError, match=r"batch norm '0' has momentum=None .* give it a momentum"):
        to_keras(nn.Sequential(nn.BatchNorm1d(3, momentum=None)), (3,))
    with pytest.raises(ValueError, match="batch norm 'root' has track_running_stats=False"):
        to_keras(nn.BatchNorm1d(3, track_running_stats=False), (3,))
    with pytest.raises(ValueError, match=r"input_shape is required: the model starts with BatchNorm2d"):
        to_keras(nn.Sequential(nn.BatchNorm2d(3)))
    with pytest.raises(ValueError, match=r"input_shape must be one sample's shape.* got \(\)"):
        to_keras(nn.Sequential(nn.ReLU()), ())
    with pytest.raises(ValueError, match=r"Linear '1' gets a 4-D tensor; it needs \(N, 3\)"):
        to_keras(nn.Sequential(nn.ReLU(), nn.Linear(3, 2)), (3, 2, 2))
    with pytest.raises(TypeError, match="model must be a normlab.nn.Module, got str"):
        to_keras("model", (3,))
