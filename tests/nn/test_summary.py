"""model.summary(): output shapes, parameter counts and totals, without changing the model."""

import numpy as np
import pytest

from normlab import nn
from normlab.models import build_model
from normlab.models.fcnet import FullyConnectedNet


def test_fcnet_summary_lists_every_layer_with_its_output_shape_and_parameters():
    model = build_model("fcnet", input_shape=(1, 28, 28), num_classes=10, rng=np.random.default_rng(0),
                        hidden_dims=(32, 16))
    summary = model.summary()  # build_model remembers the input shape
    rows = {r.name: r for r in summary.rows}
    assert [r.kind for r in summary.rows] == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d",
                                              "ReLU", "Linear"]
    assert rows["0"].output_shape == (1, 784) and rows["1"].output_shape == (1, 32)
    assert rows["4"].output_shape == (1, 16) and rows["7"].output_shape == (1, 10)
    assert rows["1"].parameters == 784 * 32 + 32 and rows["2"].parameters == 2 * 32
    assert rows["2"].buffers == 32 + 32 + 1  # running mean, running var, num_batches_tracked
    assert summary.total_parameters == sum(p.data.size for p in model.parameters()) == 784 * 32 + 32 + 64 + \
        32 * 16 + 16 + 32 + 16 * 10 + 10
    assert summary.parameter_bytes == 4 * summary.total_parameters
    text = str(summary)
    assert "(1, 784)" in text and f"parameters: {summary.total_parameters:,}" in text and "BatchNorm1d" in text


def test_cnn_summary_nests_blocks_and_counts_their_children():
    model = build_model("bn-cnn", input_shape=(1, 28, 28), num_classes=10, rng=np.random.default_rng(0),
                        widths=(4, 8, 8))
    summary = model.summary((1, 28, 28))
    rows = {r.name: r for r in summary.rows}
    assert rows["0"].output_shape == (1, 4, 28, 28)  # the stem keeps the size, its pool halves it
    assert rows["2"].output_shape == (1, 4, 14, 14)
    assert rows["5.conv1"].depth == 1 and rows["5.shortcut.0"].depth == 2
    block = [r for r in summary.rows if r.name.startswith("5.") and r.name.count(".") == 1]
    assert rows["5"].parameters == sum(r.parameters for r in block)
    assert summary.rows[-1].output_shape == (1, 10)


def test_summary_leaves_weights_buffers_modes_and_generators_untouched():
    rng = np.random.default_rng(3)
    model = FullyConnectedNet(12, (8,), 3, normalization="batch", dropout=0.5, rng=rng)
    model.forward(rng.standard_normal((16, 12)).astype(np.float32))  # running statistics away from their start
    dropout = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    before, rng_state = model.state_dict(), dropout.rng.bit_generator.state
    model.summary()
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert dropout.rng.bit_generator.state == rng_state
    assert "forward" not in vars(model[0])  # the recording wrappers are gone


def test_summary_needs_an_input_shape_it_cannot_infer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=np.random.default_rng(0)), nn.ReLU())
    with pytest.raises(ValueError, match="input_shape is required"):
        model.summary()
    assert nn.Linear(5, 2, rng=np.random.default_rng(0)).summary().rows[0].output_shape == (1, 2)


def test_summary_names_a_wrong_input_shape():
    model = nn.Sequential(nn.Linear(5, 2, rng=np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"input_shape \(7,\)"):
        model.summary((7,))
    with pytest.raises(ValueError, match="input_shape must be one sample's shape"):
        model.summary((0, 3))


@pytest.mark.parametrize("batch, training", [(16, True), (1, False)])
def test_summary_between_forward_and_backward_leaves_the_forward_caches(batch, training):
    """forward -> summary() -> backward gives the gradients of forward -> backward: the summary's pass (a batch
    of one in evaluation mode) must not replace the caches the backward reads (with 16 samples the backward
    raised on the shapes; with one, in evaluation mode, it silently used the summary's zero input)."""
    def grads(with_summary):
        rng = np.random.default_rng(5)
        model = build_model("bn-cnn", input_shape=(1, 8, 8), num_classes=3, rng=np.random.default_rng(0),
                            widths=(2, 4, 4))
        model.train(training)
        x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
        out = model.forward(x)
        if with_summary:
            model.summary()
        dx = model.backward(rng.standard_normal(out.shape).astype(np.float32))
        return dx, [p.grad for p in model.parameters()]

    dx, plain = grads(False)
    dx_summary, with_summary = grads(True)
    np.testing.assert_array_equal(dx_summary, dx)
    assert len(plain) == len(with_summary)
    for a, b in zip(plain, with_summary):
        np.testing.assert_array_equal(b, a)
