"""The convolutional track's network (`normlab.experiments.cnn`): every normalization in every slot of the
slimmed bn-cnn, the same weight draw at every scale, and the track chosen by `--model`."""

import numpy as np
import pytest

from normlab.cli.experiment import track_names
from normlab.experiments import EXPERIMENTS
from normlab.experiments.cnn import CHANNELS_PER_GROUP, WIDTHS, build_cnn
from normlab.nn import BatchNorm2d, BatchRenorm2d, Conv2d, GhostBatchNorm2d, GroupNorm, RenormSchedule
from normlab.nn.normalization import _BatchNorm

SHAPE = (1, 28, 28)
SLOTS = 6  # stem, two per residual block, and the second block's 1x1 shortcut


def norms(model):
    return [m for m in model.modules() if isinstance(m, (_BatchNorm, GroupNorm))]


@pytest.mark.parametrize("normalization, kind", [("batch", BatchNorm2d), ("group", GroupNorm),
                                                 ("renorm", BatchRenorm2d), ("ghost", GhostBatchNorm2d)])
def test_every_slot_gets_the_normalization(normalization, kind):
    schedule = RenormSchedule(warmup_steps=3, rmax_full_at=10, dmax_full_at=5)
    model = build_cnn(normalization, SHAPE, 10, np.random.default_rng(0), momentum=0.2, virtual_batch_size=4,
                      renorm_schedule=schedule)
    layers = norms(model)
    assert len(layers) == SLOTS and all(type(m) is kind for m in layers)
    assert sorted({m.num_channels if kind is GroupNorm else m.num_features for m in layers}) == list(WIDTHS)
    if kind is GroupNorm:
        assert all(m.num_groups == m.num_channels // CHANNELS_PER_GROUP for m in layers)
    else:
        assert all(m.momentum == 0.2 for m in layers)
    if kind is GhostBatchNorm2d:
        assert all(m.virtual_batch_size == 4 for m in layers)
    if kind is BatchRenorm2d:
        assert all(m.schedule is schedule for m in layers)
    assert all(conv.bias is None for conv in model.modules() if isinstance(conv, Conv2d))
    x = np.random.default_rng(1).standard_normal((8, *SHAPE)).astype(np.float32)
    scores = model.forward(x)
    assert scores.shape == (8, 10) and np.all(np.isfinite(scores))
    assert model.backward(np.ones_like(scores)).shape == x.shape


def test_no_normalization_has_biases_and_no_norm_layer():
    model = build_cnn("none", SHAPE, 10, np.random.default_rng(0))
    assert norms(model) == []
    assert all(conv.bias is not None for conv in model.modules() if isinstance(conv, Conv2d))
    with pytest.raises(ValueError, match=r"normalization must be one of .*'ghost'.*, got 'layer'"):
        build_cnn("layer", SHAPE, 10, np.random.default_rng(0))


def test_a_weight_scale_multiplies_one_standard_normal_draw():
    small = build_cnn("batch", SHAPE, 10, np.random.default_rng(3), weight_scale=1e-3)
    large = build_cnn("batch", SHAPE, 10, np.random.default_rng(3), weight_scale=0.5)
    for (name, a), (_, b) in zip(small.named_parameters(), large.named_parameters()):
        if name.endswith("weight") and a.data.ndim > 1:  # convolution and linear weights, not gamma
            np.testing.assert_allclose(b.data / 0.5, a.data / 1e-3, rtol=1e-5)
    stem = small[0].weight.data
    assert abs(stem.std() / 1e-3 - 1) < 0.3  # 72 draws of N(0, 1e-6)


def test_the_model_option_picks_each_experiments_track():
    assert track_names("batch-size", "bn-cnn", EXPERIMENTS) == ["batch-size-cnn"]
    assert track_names("batch-size-cnn", "fcnet", EXPERIMENTS) == ["batch-size"]
    assert track_names("batch-size", None, EXPERIMENTS) == ["batch-size"]
    assert track_names("all", "bn-cnn", EXPERIMENTS) == ["learning-rate-cnn", "init-scale-cnn", "batch-size-cnn"]
    assert "batch-size-cnn" in track_names("all", None, EXPERIMENTS) and "batch-size" in track_names(
        "all", None, EXPERIMENTS)
    with pytest.raises(ValueError, match="experiment 'regularization' has no bn-cnn track; the experiments that "
                                         "have one: learning-rate, init-scale, batch-size"):
        track_names("regularization", "bn-cnn", EXPERIMENTS)
