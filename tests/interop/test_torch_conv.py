"""normlab <-> PyTorch twins of the convolutional layers and models beyond what the parametrized "cnn"
kind covers: the models of normlab.models round trip exactly, every norm2d variant of ResidualBlock
(instance norm included) matches torch, folding reaches the convolutions, and torch options normlab lacks
are refused by name."""

import numpy as np
import pytest

from normlab import nn
from normlab.interop import fold_batchnorm, from_torch, to_torch
from normlab.models import build_model

FLOAT32 = 1e-5


@pytest.mark.parametrize("name, normalization", [("convnet3", None), ("bn-cnn", "batch"), ("bn-cnn", "group")])
def test_models_round_trip_through_torch_exactly(torch, name, normalization):
    options = {} if normalization is None else {"normalization": normalization}
    model = build_model(name, input_shape=(1, 12, 12), num_classes=4, rng=np.random.default_rng(0), **options)
    back = from_torch(to_torch(model), rng=np.random.default_rng(1))
    assert type(back) is nn.Sequential and list(back._modules) == list(model._modules)
    assert [repr(m) for m in back] == [repr(m) for m in model]
    ours, theirs = model.state_dict(), back.state_dict()
    assert list(ours) == list(theirs)
    assert all(np.array_equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)


@pytest.mark.parametrize("normalization", ["batch", "group", "layer", "instance", "none"])
@pytest.mark.parametrize("stride", [1, 2])
def test_residual_block_matches_torch_for_every_normalization(torch, make_batch, assert_close, normalization, stride):
    rng = np.random.default_rng(3)
    block = nn.ResidualBlock(4, 4 if stride == 1 else 6, stride, normalization, rng=rng)
    x, _ = make_batch((4, 5, 5), seed=1)
    twin = to_torch(block)
    xt = torch.tensor(x, requires_grad=True)
    out = twin(xt)
    assert_close(block(x), out.detach().numpy(), FLOAT32, "output")
    g = rng.standard_normal(out.shape).astype(np.float32)  # (N, C, H', W')
    out.backward(torch.from_numpy(g))
    assert_close(block.backward(g), xt.grad.numpy(), FLOAT32, "dx")
    for name, p in twin.named_parameters():
        assert_close(dict(block.named_parameters())[name].grad, p.grad.numpy(), FLOAT32, name)
    back = from_torch(twin)
    assert repr(back) == repr(block)


def test_folding_reaches_the_convolutions_of_the_cnn(make_model):
    model, _ = make_model("cnn", "batch")
    model.eval()
    folded = fold_batchnorm(model)
    norms = [name for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == []  # every batch norm follows a Conv2d: the first, both blocks' bn1/bn2, the shortcut's
    assert isinstance(folded[4].bn1, nn.Identity) and isinstance(folded[4].shortcut[1], nn.Identity)


def test_grouped_strided_conv_matches_torch(torch, make_batch, assert_close):
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2, rng=np.random.default_rng(0))
    x, _ = make_batch((4, 7, 6), seed=2)
    twin = to_torch(conv)
    assert (twin.kernel_size, twin.stride, twin.padding, twin.groups) == ((3, 2), (2, 1), (1, 0), 2)
    assert_close(conv(x), twin(torch.from_numpy(x)).detach().numpy(), FLOAT32, "output")
    assert repr(from_torch(twin)) == repr(conv)


def test_torch_options_normlab_lacks_are_refused(torch):
    with pytest.raises(ValueError, match=r"no dilation; got torch Conv2d\(dilation=\(2, 2\)\)"):
        from_torch(torch.nn.Conv2d(2, 2, 3, dilation=2))
    with pytest.raises(ValueError, match=r"padding_mode='reflect'"):
        from_torch(torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match=r"padding='same'"):
        from_torch(torch.nn.Conv2d(2, 2, 3, padding="same"))
    with pytest.raises(ValueError, match=r"MaxPool2d has no padding; got torch MaxPool2d\(padding=1\)"):
        from_torch(torch.nn.MaxPool2d(3, padding=1))
    with pytest.raises(ValueError, match=r"AvgPool2d has no ceil_mode"):
        from_torch(torch.nn.AvgPool2d(2, ceil_mode=True))
    with pytest.raises(ValueError, match=r"no running statistics; got torch InstanceNorm2d\(track_running_stats=True\)"):
        from_torch(torch.nn.InstanceNorm2d(3, track_running_stats=True))
