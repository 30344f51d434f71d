"""fold_batchnorm: evaluation-mode batch norm merged into the Linear before it predicts what the unfolded
model predicts, leaves the original alone, keeps the other layers' names, and folds only what it may."""

import numpy as np
import pytest

from normlab import nn
from normlab.interop import fold_batchnorm
from normlab.interop.fold import register_fold_pairs

FLOAT32 = 1e-5
FLOAT64 = 1e-13


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, FLOAT32), (np.float64, FLOAT64)])
def test_folded_model_predicts_the_same(make_model, make_batch, assert_close, kind, dtype, tolerance):
    model, shape = make_model(kind, "batch", dtype=dtype)
    model.eval()
    x, _ = make_batch(shape, seed=0, dtype=dtype)
    folded = fold_batchnorm(model)
    out = folded(x)
    assert out.dtype == dtype
    assert_close(out, model(x), tolerance, "output")


def test_folding_replaces_each_batch_norm_after_a_linear_by_identity_and_keeps_names(make_model):
    model, _ = make_model("image", "batch")  # BatchNorm2d(4) first (nothing to fold into), BatchNorm1d at 4
    model.eval()
    folded = fold_batchnorm(model)
    assert [type(m).__name__ for m in folded] == ["BatchNorm2d", "ReLU", "Flatten", "Linear", "Identity", "Sigmoid",
                                                  "Linear"]
    assert list(folded.state_dict()) == [n for n in model.state_dict() if not n.startswith("4.")]


def test_original_model_is_untouched(make_model):
    model, _ = make_model("mlp", "batch")
    model.eval()
    before = model.state_dict()
    fold_batchnorm(model)
    after = model.state_dict()
    assert list(after) == list(before) and all(np.array_equal(after[n], before[n]) for n in before)
    assert isinstance(model[1], nn.BatchNorm1d)


def test_the_fold_formula():
    rng = np.random.default_rng(1234)
    linear = nn.Linear(3, 2, rng=rng, dtype=np.float64)
    bn = nn.BatchNorm1d(2, eps=0.5, dtype=np.float64).eval()
    bn.weight.data[...], bn.bias.data[...] = [2.0, -1.0], [0.5, 3.0]
    bn.running_mean[...], bn.running_var[...] = [1.0, -2.0], [3.5, 0.5]
    w, b = linear.weight.data.copy(), linear.bias.data.copy()
    folded = fold_batchnorm(nn.Sequential(linear, bn))[0]
    scale = np.array([2.0 / 2.0, -1.0 / 1.0])  # gamma / sqrt(var + eps)
    np.testing.assert_allclose(folded.weight.data, w * scale[:, None], rtol=1e-15)
    np.testing.assert_allclose(folded.bias.data, (b - [1.0, -2.0]) * scale + [0.5, 3.0], rtol=1e-15)


def test_linear_without_bias_and_batch_norm_without_affine_fold(make_batch, assert_close):
    rng = np.random.default_rng(1234)
    model = nn.Sequential(nn.Linear(6, 5, bias=False, rng=rng), nn.BatchNorm1d(5, affine=False), nn.ReLU())
    model[1].running_mean[...], model[1].running_var[...] = rng.standard_normal(5), rng.uniform(0.5, 2, 5)
    model.eval()
    x, _ = make_batch((6,), seed=0)
    folded = fold_batchnorm(model)
    assert folded[0].bias is not None and isinstance(folded[1], nn.Identity)
    assert_close(folded(x), model(x), FLOAT32, "output")


@pytest.mark.parametrize("make_norm", [lambda: nn.BatchRenorm1d(5), lambda: nn.GhostBatchNorm1d(5, 2)],
                         ids=["renorm", "ghost"])
def test_renorm_and_ghost_batch_norm_fold_as_they_evaluate_as_batch_norm(make_batch, assert_close, make_norm):
    rng = np.random.default_rng(1234)
    model = nn.Sequential(nn.Linear(6, 5, rng=rng), make_norm(), nn.ReLU())
    model[1].running_mean[...], model[1].running_var[...] = rng.standard_normal(5), rng.uniform(0.5, 2, 5)
    model.eval()
    x, _ = make_batch((6,), seed=0)
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.Identity)
    assert_close(folded(x), model(x), FLOAT32, "output")


def test_batch_norms_that_cannot_fold_are_left():
    rng = np.random.default_rng(1234)
    in_training = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.BatchNorm1d(3))
    no_running_stats = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    after_activation = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.ReLU(), nn.BatchNorm1d(3)).eval()
    for model in (in_training, no_running_stats, after_activation):
        folded = fold_batchnorm(model)
        assert [type(m) for m in folded] == [type(m) for m in model]


def test_nested_sequentials_fold(make_batch, assert_close):
    rng = np.random.default_rng(1234)
    inner = nn.Sequential(nn.Linear(6, 4, rng=rng), nn.BatchNorm1d(4), nn.Tanh())
    model = nn.Sequential(inner, nn.Linear(4, 2, rng=rng), nn.BatchNorm1d(2))
    for bn in (inner[1], model[2]):
        c = bn.num_features
        bn.running_mean[...], bn.running_var[...] = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    model.eval()
    x, _ = make_batch((6,), seed=0)
    folded = fold_batchnorm(model)
    assert isinstance(folded[0][1], nn.Identity) and isinstance(folded[2], nn.Identity)
    assert_close(folded(x), model(x), FLOAT32, "output")


def test_containers_other_than_sequential_register_their_pairs(make_batch, assert_close):
    rng = np.random.default_rng(1234)
    class Block(nn.Module):  # like the coming ResidualBlock: children called by name in forward
        def __init__(self):
            super().__init__()
            self.lin, self.act, self.bn = nn.Linear(6, 3, rng=rng), nn.ReLU(), nn.BatchNorm1d(3)

        def forward(self, x):
            return self.act(self.bn(self.lin(x)))

    block = Block()
    block.bn.running_mean[...] = rng.standard_normal(3)
    block.eval()
    assert isinstance(fold_batchnorm(block).bn, nn.BatchNorm1d)  # unknown container: nothing folds
    register_fold_pairs(Block, lambda b: [("lin", "bn")])
    folded = fold_batchnorm(block)
    x, _ = make_batch((6,), seed=0)
    assert isinstance(folded.bn, nn.Identity)
    assert_close(folded(x), block(x), FLOAT32, "output")


def test_fold_batchnorm_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="model must be a normlab.nn.Module, got dict"):
        fold_batchnorm({})


@pytest.mark.parametrize("name, options", [("fcnet", {"hidden_dims": (8, 6)}), ("bn-cnn", {"widths": (4, 8, 8)})])
def test_the_registered_models_fold_like_sequentials(name, options):
    """The models normlab train builds are Sequential subclasses; folding matches container types exactly,
    so each is registered: every batch norm of theirs that follows an affine layer goes."""
    from normlab.models import build_model

    rng = np.random.default_rng(0)
    model = build_model(name, input_shape=(1, 12, 12), num_classes=3, rng=rng, **options)
    for m in model.modules():  # running statistics away from (0, 1), so a missed fold shows
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2, m.num_features)
    model.eval()
    folded = fold_batchnorm(model)
    norms = [n for n, m in folded.named_modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert norms == []
    x = rng.standard_normal((5, 1, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(folded.forward(x), model.forward(x), rtol=1e-4, atol=1e-5)
