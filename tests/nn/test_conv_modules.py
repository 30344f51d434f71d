"""Conv2d, pooling, InstanceNorm2d, the spatial normalizations and ResidualBlock as modules: the same
attributes, state dict names, outputs and gradients as their torch.nn twins (float64)."""

import numpy as np
import pytest
from torch_oracle import assert_module_matches_torch, torch

from normlab import nn

tnn = torch.nn


@pytest.mark.parametrize("args, kwargs", [
    ((3, 4, 3), {}),
    ((4, 6, (3, 2)), {"stride": 2, "padding": (1, 0)}),
    ((4, 6, 1), {"bias": False, "groups": 2}),
])
def test_conv2d_matches_torch(args, kwargs):
    rng = np.random.default_rng(0)
    ours = nn.Conv2d(*args, **kwargs, rng=rng, dtype=np.float64)
    theirs = tnn.Conv2d(*args, **kwargs)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "groups"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert_module_matches_torch(ours, theirs, rng.standard_normal((2, args[0], 6, 5)), rng)


def test_conv2d_default_initialization_is_torchs():
    conv = nn.Conv2d(8, 16, 3, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(8 * 3 * 3)
    for p in (conv.weight.data, conv.bias.data):
        assert p.dtype == np.float32 and np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    # Uniform on [-b, b] has standard deviation b / sqrt(3).
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.05 * bound


def test_conv2d_backward_skips_only_the_input_gradient_when_told():
    rng = np.random.default_rng(1)
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 2, 4, 4))
    dout = rng.standard_normal((2, 3, 4, 4))
    conv(x)
    dx = conv.backward(dout)
    grads = [p.grad.copy() for p in conv.parameters()]
    conv.zero_grad()
    with nn.input_grad_skipped(conv):
        assert conv.backward(dout) is None
    for p, g in zip(conv.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)
    np.testing.assert_array_equal(conv.backward(dout), dx)


@pytest.mark.parametrize("call, error, message", [
    (lambda: nn.Conv2d(3, 4, 3)(np.zeros((1, 2, 5, 5), np.float32)), ValueError,
     r"Conv2d\(3, 4\) expected input with 3 channels in dimension 1, got input of shape \(1, 2, 5, 5\)"),
    (lambda: nn.Conv2d(0, 4, 3), ValueError, r"in_channels must be a positive integer, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, r"groups=2 must divide in_channels=3 and out_channels=4"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0.5), TypeError, r"stride must be an int or a pair of ints, got 0.5"),
    (lambda: nn.Conv2d(3, 4, 0), ValueError, r"kernel_size must be >= 1, got 0"),
    (lambda: nn.MaxPool2d(2, stride=0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: nn.AvgPool2d(2.5), TypeError, r"kernel_size must be an int or a pair of ints"),
    (lambda: nn.InstanceNorm2d(3)(np.zeros((2, 4, 3, 3))), ValueError,
     r"InstanceNorm2d\(3\) expected input of shape \(N, 3, H, W\), got \(2, 4, 3, 3\)"),
    (lambda: nn.norm2d("weight", 4), ValueError,
     (r"normalization must be one of \('none', 'batch', 'layer', 'group', 'instance', 'renorm', 'ghost'\), "
      r"got 'weight'")),
    (lambda: nn.Conv2d(3, 4, 3).backward(np.zeros((1, 4, 3, 3))), RuntimeError, r"Conv2d.backward called before forward"),
])
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("ours, theirs", [
    (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2)),
    (lambda: nn.MaxPool2d(3, 2), lambda: tnn.MaxPool2d(3, 2)),
    (lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2)),
    (lambda: nn.AvgPool2d((2, 3), (1, 2)), lambda: tnn.AvgPool2d((2, 3), (1, 2))),
    (lambda: nn.GlobalAvgPool2d(), lambda: tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())),
])
def test_pooling_modules_match_torch(ours, theirs):
    rng = np.random.default_rng(2)
    ours, theirs = ours(), theirs()
    if hasattr(theirs, "kernel_size"):
        assert (ours.kernel_size, ours.stride) == (theirs.kernel_size, theirs.stride)
    assert_module_matches_torch(ours, theirs, rng.standard_normal((2, 3, 7, 6)), rng)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_matches_torch(affine):
    rng = np.random.default_rng(3)
    ours, theirs = nn.InstanceNorm2d(4, affine=affine, dtype=np.float64), tnn.InstanceNorm2d(4, affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.normal_(), theirs.bias.normal_()
    assert_module_matches_torch(ours, theirs, rng.standard_normal((3, 4, 5, 5)) * 2 + 1, rng)
    ours.eval(), theirs.eval()  # no running statistics: evaluation computes the same thing
    assert_module_matches_torch(ours, theirs, rng.standard_normal((3, 4, 5, 5)), rng)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("make", [
    lambda: (nn.BatchNorm2d(4, dtype=np.float64), tnn.BatchNorm2d(4)),
    lambda: (nn.BatchNorm2d(4, momentum=None, dtype=np.float64), tnn.BatchNorm2d(4, momentum=None)),
    lambda: (nn.GroupNorm(2, 4, dtype=np.float64), tnn.GroupNorm(2, 4)),
    lambda: (nn.LayerNorm((4, 5, 3), dtype=np.float64), tnn.LayerNorm((4, 5, 3))),
])
def test_spatial_normalizations_match_torch_on_nchw(make, training):
    rng = np.random.default_rng(4)
    ours, theirs = make()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
        for name, b in theirs.named_buffers():
            if name.startswith("running"):
                b.uniform_(0.5, 1.5)
    ours.train(training), theirs.train(training)
    for _ in range(2):  # twice: running statistics are updated from updated values
        assert_module_matches_torch(ours, theirs, rng.standard_normal((3, 4, 5, 3)) * 3 + 2, rng)


class TorchResidualBlock(tnn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), children named as normlab's block."""

    def __init__(self, ours: nn.ResidualBlock):
        super().__init__()
        norms = {nn.BatchNorm2d: lambda m: tnn.BatchNorm2d(m.num_features),
                 nn.GroupNorm: lambda m: tnn.GroupNorm(m.num_groups, m.num_channels),
                 nn.InstanceNorm2d: lambda m: tnn.InstanceNorm2d(m.num_features, affine=m.affine),
                 nn.Identity: lambda m: tnn.Identity()}

        def conv(m):
            return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)

        self.conv1, self.bn1 = conv(ours.conv1), norms[type(ours.bn1)](ours.bn1)
        self.conv2, self.bn2 = conv(ours.conv2), norms[type(ours.bn2)](ours.bn2)
        self.shortcut = None
        if ours.shortcut is not None:
            self.shortcut = tnn.Sequential(conv(ours.shortcut[0]), norms[type(ours.shortcut[1])](ours.shortcut[1]))

    def forward(self, x):
        hidden = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(hidden)) + (x if self.shortcut is None else self.shortcut(x)))


@pytest.mark.parametrize("normalization", ["batch", "group", "layer", "instance", "none"])  # the ones torch has
@pytest.mark.parametrize("in_channels, out_channels, stride", [(4, 4, 1), (4, 8, 2), (2, 4, 1)])
def test_residual_block_matches_an_equivalent_torch_block(normalization, in_channels, out_channels, stride):
    rng = np.random.default_rng(5)
    ours = nn.ResidualBlock(in_channels, out_channels, stride, normalization, rng=rng, dtype=np.float64)
    theirs = TorchResidualBlock(ours)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    expected = ["conv1.weight", "conv2.weight"] + (["shortcut.0.weight"] if stride != 1 or in_channels != out_channels else [])
    assert set(expected) <= set(ours.state_dict())
    assert_module_matches_torch(ours, theirs, rng.standard_normal((3, in_channels, 6, 6)), rng)
    assert (ours.shortcut is None) == (stride == 1 and in_channels == out_channels)


def test_residual_block_without_normalization_has_biases_and_identity_norms():
    block = nn.ResidualBlock(3, 3, normalization="none", rng=np.random.default_rng(6))
    assert isinstance(block.bn1, nn.Identity) and block.conv1.bias is not None
    assert list(block.state_dict()) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]


@pytest.mark.parametrize("normalization, kind, groups", [
    ("batch", nn.BatchNorm2d, None), ("group", nn.GroupNorm, 32), ("layer", nn.GroupNorm, 1),
    ("instance", nn.InstanceNorm2d, None), ("none", nn.Identity, None),
])
def test_norm2d_builds_the_named_normalization(normalization, kind, groups):
    norm = nn.norm2d(normalization, 32)
    assert type(norm) is kind
    if groups is not None:
        assert norm.num_groups == groups
    x = np.random.default_rng(7).standard_normal((2, 32, 3, 3)).astype(np.float32)
    assert norm(x).dtype == np.float32 and norm.backward(x).shape == x.shape
