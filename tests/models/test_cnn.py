"""The CNNs: registered by name, the right shapes and dtypes, gradients of every parameter checked
numerically in float64, clear errors for bad configurations."""

import numpy as np
import pytest

from normlab import functional as F
from normlab import nn
from normlab.gradcheck import numerical_gradient, relative_error
from normlab.models import ResNetCNN, ThreeLayerConvNet, available_models, build_model
from normlab.models.registry import _BUILDERS


def test_both_cnns_are_registered_and_the_deeper_one_asks_for_augmentation():
    assert {"convnet3", "bn-cnn"} <= set(available_models())
    assert _BUILDERS["bn-cnn"].default_augment is True
    assert not getattr(_BUILDERS["convnet3"], "default_augment", False)


@pytest.mark.parametrize("name, options", [
    ("convnet3", {}),
    ("convnet3", {"num_filters": 4, "filter_size": 3, "hidden_dim": 7, "weight_scale": 1e-3}),
    *[("bn-cnn", {"normalization": kind}) for kind in nn.NORMALIZATIONS_2D],
    ("bn-cnn", {"widths": (8, 16)}),
])
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 32, 32)])
def test_forward_and_backward_shapes_and_dtype(name, options, input_shape):
    rng = np.random.default_rng(0)
    model = build_model(name, input_shape=input_shape, num_classes=10, rng=rng, **options)
    x = rng.standard_normal((4, *input_shape), dtype=np.float32)
    scores = model.forward(x)
    assert scores.shape == (4, 10) and scores.dtype == np.float32
    _, dscores = F.softmax_cross_entropy(scores, np.arange(4))
    dx = model.backward(dscores)
    assert dx.shape == x.shape and dx.dtype == np.float32
    for name_, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == np.float32, name_
        assert np.isfinite(p.grad).all(), name_


def test_three_layer_convnet_is_cs231ns_architecture():
    model = ThreeLayerConvNet((3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100, num_classes=10,
                              rng=np.random.default_rng(0))
    assert [type(m) for m in model] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        "0.weight": (32, 3, 7, 7), "0.bias": (32,), "4.weight": (100, 32 * 16 * 16), "4.bias": (100,),
        "6.weight": (10, 100), "6.bias": (10,),
    }
    assert model[0].padding == (3, 3)


def test_he_initialization_of_the_deeper_cnn():
    model = ResNetCNN((3, 32, 32), widths=(32, 64), rng=np.random.default_rng(1))
    conv = model[4].conv2  # 32 -> 32, 3x3: fan_in 288
    assert abs(conv.weight.data.std() / np.sqrt(2 / 288) - 1) < 0.05
    assert np.all(model[-1].bias.data == 0)
    assert isinstance(model[-2], nn.GlobalAvgPool2d) and model[-1].in_features == 64


def test_the_stem_pools_before_its_relu_with_the_same_result():
    """relu(max_pool(z)) = max_pool(relu(z)), and the gradients agree too, on windows with ties, zeros and
    only negative values (where relu-then-pool routes the gradient to a zero it then masks)."""
    model = ResNetCNN((1, 8, 8), widths=(4,), rng=np.random.default_rng(2))
    assert [type(m) for m in model[:4]] == [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU]
    rng = np.random.default_rng(3)
    z = rng.integers(-2, 3, (3, 4, 8, 8)).astype(np.float64)  # many ties and zeros
    z[0, 0, :2, :2] = -1.0  # one window all negative and tied
    dout = rng.standard_normal((3, 4, 4, 4))
    pool_first, relu_first = nn.Sequential(nn.MaxPool2d(2), nn.ReLU()), nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    np.testing.assert_array_equal(pool_first(z), relu_first(z))
    np.testing.assert_array_equal(pool_first.backward(dout), relu_first.backward(dout))


def loss_of(model, x, labels):
    return F.softmax_cross_entropy(model.forward(x), labels)[0]


@pytest.mark.parametrize("name, options", [
    ("convnet3", {"num_filters": 3, "filter_size": 3, "hidden_dim": 5}),
    ("bn-cnn", {"widths": (2, 3), "normalization": "batch"}),
    ("bn-cnn", {"widths": (2, 4), "normalization": "group"}),
    ("bn-cnn", {"widths": (2, 3), "normalization": "none"}),
])
def test_every_parameter_gradient_matches_numerical_gradients(name, options):
    rng = np.random.default_rng(2)
    model = build_model(name, input_shape=(2, 6, 6), num_classes=3, rng=rng, dtype=np.float64, **options)
    x, labels = rng.standard_normal((4, 2, 6, 6)), rng.integers(0, 3, 4)
    _, dscores = F.softmax_cross_entropy(model.forward(x), labels)
    model.zero_grad()
    dx = model.backward(dscores)
    assert relative_error(dx, numerical_gradient(lambda v: loss_of(model, v, labels), x)) < 1e-6
    for param_name, p in model.named_parameters():
        numerical = numerical_gradient(lambda _: loss_of(model, x, labels), p.data)
        assert relative_error(p.grad, numerical) < 1e-6, param_name


@pytest.mark.parametrize("call, error, message", [
    (lambda: build_model("bn-cnn", input_shape=(784,), num_classes=10, rng=np.random.default_rng()), ValueError,
     r"input_shape must be one image's \(C, H, W\), got \(784,\)"),
    (lambda: build_model("convnet3", input_shape=(1, 28, 28), num_classes=10, rng=np.random.default_rng(),
                         filter_size=4), ValueError, r"filter_size must be a positive odd integer"),
    (lambda: build_model("bn-cnn", input_shape=(1, 28, 28), num_classes=10, rng=np.random.default_rng(),
                         normalization="batchnorm"), ValueError, r"normalization must be one of"),
    (lambda: build_model("bn-cnn", input_shape=(1, 28, 28), num_classes=10, rng=np.random.default_rng(),
                         widths=()), ValueError, r"widths must be a non-empty sequence"),
    (lambda: build_model("bn-cnn", input_shape=(1, 1, 28), num_classes=10, rng=np.random.default_rng()),
     ValueError, r"input_shape must have H, W >= 2"),
])
def test_bad_configurations_are_rejected(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_deeper_cnn_takes_every_normalization_with_its_options():
    rng = np.random.default_rng(4)
    grouped = build_model("bn-cnn", input_shape=(1, 8, 8), num_classes=3, rng=rng, widths=(8, 16),
                          normalization="group", norm_options={"groups": 4})
    assert {m.num_groups for m in grouped.modules() if isinstance(m, nn.GroupNorm)} == {4}
    assert grouped.norm_options == {"groups": 4}
    default = build_model("bn-cnn", input_shape=(1, 8, 8), num_classes=3, rng=rng, widths=(24, 48),
                          normalization="group")
    # The one group-count default: the largest divisor of C up to 32 (24 -> 24 groups, 48 -> 24 groups).
    assert sorted({(m.num_channels, m.num_groups) for m in default.modules() if isinstance(m, nn.GroupNorm)}) == [
        (24, 24), (48, 24)]
    ghost = build_model("bn-cnn", input_shape=(1, 8, 8), num_classes=3, rng=rng, widths=(4,),
                        normalization="ghost", norm_options={"virtual_batch_size": 2})
    assert [m.virtual_batch_size for m in ghost.modules() if isinstance(m, nn.GhostBatchNorm2d)] == [2, 2, 2]
    with pytest.raises(ValueError, match=r"normalization 'batch' does not take the option 'groups'"):
        build_model("bn-cnn", input_shape=(1, 8, 8), num_classes=3, rng=rng, norm_options={"groups": 2})


@pytest.mark.parametrize("name", ["convnet3", "bn-cnn"])
def test_rng_is_optional_and_a_seeded_build_is_bit_identical(name):
    options = {"num_filters": 3, "filter_size": 3, "hidden_dim": 5} if name == "convnet3" else {"widths": (4, 8)}
    a, b = (build_model(name, input_shape=(1, 8, 8), num_classes=3, rng=np.random.default_rng(7), **options)
            for _ in range(2))
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(value, other, err_msg=key)
    fresh = [build_model(name, input_shape=(1, 8, 8), num_classes=3, **options) for _ in range(2)]
    assert not np.array_equal(fresh[0][0].weight.data, fresh[1][0].weight.data)
    assert ThreeLayerConvNet((1, 8, 8), 3, 3, 5, 3)[0].weight.shape == (3, 1, 3, 3)
    assert ResNetCNN((1, 8, 8), 3, widths=(4,))[0].weight.shape == (4, 1, 3, 3)
