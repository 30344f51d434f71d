"""normlab.nn modules against torch.nn: outputs, input gradients, parameter gradients and running
statistics (float64, so any difference beyond rounding is a bug)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from normlab import nn

TOL = {"rtol": 1e-10, "atol": 1e-12}


def to_torch(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def copy_params(ours: nn.Module, theirs: "torch.nn.Module") -> None:
    """Load our state dict into the torch module: also checks that the key names agree."""
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()}, strict=True)


def compare(ours: nn.Module, theirs, x: np.ndarray, rng) -> None:
    """Forward and backward through both; outputs, dx and every parameter gradient must agree."""
    xt = to_torch(x)
    out = ours.forward(x)
    out_t = theirs(xt)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **TOL)
    dout = rng.standard_normal(out.shape)
    dx = ours.backward(dout)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_params[name].grad.numpy(), **TOL, err_msg=name)


def test_linear_matches_torch(rng):
    ours = nn.Linear(5, 3, rng=rng, dtype=np.float64)
    theirs = torch.nn.Linear(5, 3).double()
    copy_params(ours, theirs)
    compare(ours, theirs, rng.standard_normal((4, 5)), rng)


def test_linear_without_bias_has_only_weight(rng):
    ours = nn.Linear(5, 3, bias=False, rng=rng, dtype=np.float64)
    theirs = torch.nn.Linear(5, 3, bias=False).double()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    copy_params(ours, theirs)
    compare(ours, theirs, rng.standard_normal((4, 5)), rng)


@pytest.mark.parametrize("ours, theirs", [(nn.ReLU, torch.nn.ReLU), (nn.Sigmoid, torch.nn.Sigmoid),
                                          (nn.Tanh, torch.nn.Tanh)])
def test_activations_match_torch(ours, theirs, rng):
    compare(ours(), theirs(), rng.standard_normal((4, 6)) * 3, rng)


@pytest.mark.parametrize("shape, ours_cls, theirs_cls", [
    ((8, 4), nn.BatchNorm1d, torch.nn.BatchNorm1d),
    ((8, 4, 3), nn.BatchNorm1d, torch.nn.BatchNorm1d),
    ((5, 4, 3, 2), nn.BatchNorm2d, torch.nn.BatchNorm2d),
])
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_batchnorm_matches_torch_in_training_and_eval(shape, ours_cls, theirs_cls, momentum, rng):
    ours = ours_cls(4, momentum=momentum, dtype=np.float64)
    theirs = theirs_cls(4, momentum=momentum).double()
    ours.weight.data[:] = rng.standard_normal(4)
    ours.bias.data[:] = rng.standard_normal(4)
    copy_params(ours, theirs)
    for _ in range(3):  # the running statistics follow torch's over several batches
        theirs.zero_grad()
        ours.zero_grad()
        compare(ours, theirs, rng.standard_normal(shape) * 2 + 1, rng)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), **TOL, err_msg=name)
    assert int(ours.num_batches_tracked) == 3
    ours.eval()
    theirs.eval()
    theirs.zero_grad()
    ours.zero_grad()
    compare(ours, theirs, rng.standard_normal(shape), rng)
    assert int(ours.num_batches_tracked) == 3  # evaluation does not count batches


def test_batchnorm_without_running_stats_uses_batch_statistics_in_eval(rng):
    ours = nn.BatchNorm1d(4, track_running_stats=False, dtype=np.float64)
    theirs = torch.nn.BatchNorm1d(4, track_running_stats=False).double()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    ours.eval()
    theirs.eval()
    compare(ours, theirs, rng.standard_normal((6, 4)), rng)


def test_batchnorm_without_affine_has_only_buffers(rng):
    ours = nn.BatchNorm1d(4, affine=False, dtype=np.float64)
    theirs = torch.nn.BatchNorm1d(4, affine=False).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    compare(ours, theirs, rng.standard_normal((6, 4)), rng)


@pytest.mark.parametrize("shape", [(5, 6), (3, 2, 4, 4)])
def test_layernorm_matches_torch(shape, rng):
    ours = nn.LayerNorm(shape[1:], dtype=np.float64)
    theirs = torch.nn.LayerNorm(shape[1:]).double()
    ours.weight.data[...] = rng.standard_normal(shape[1:])
    ours.bias.data[...] = rng.standard_normal(shape[1:])
    copy_params(ours, theirs)
    compare(ours, theirs, rng.standard_normal(shape) * 3 - 1, rng)


@pytest.mark.parametrize("shape, groups", [((5, 6), 3), ((3, 6, 4, 4), 2), ((3, 6, 4, 4), 6)])
def test_groupnorm_matches_torch(shape, groups, rng):
    ours = nn.GroupNorm(groups, 6, dtype=np.float64)
    theirs = torch.nn.GroupNorm(groups, 6).double()
    ours.weight.data[:] = rng.standard_normal(6)
    ours.bias.data[:] = rng.standard_normal(6)
    copy_params(ours, theirs)
    compare(ours, theirs, rng.standard_normal(shape) * 2, rng)


def small_net(rng, dtype=np.float64):
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8, rng=rng, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype),
                         nn.ReLU(), nn.Linear(8, 6, rng=rng, dtype=dtype), nn.LayerNorm(6, dtype=dtype), nn.Tanh(),
                         nn.Linear(6, 3, rng=rng, dtype=dtype))


def torch_small_net():
    t = torch.nn
    return t.Sequential(t.Flatten(), t.Linear(12, 8), t.BatchNorm1d(8), t.ReLU(), t.Linear(8, 6), t.LayerNorm(6),
                        t.Tanh(), t.Linear(6, 3)).double()


def test_sequential_matches_torch_and_state_dict_keys_and_order_are_torchs(rng):
    ours, theirs = small_net(rng), torch_small_net()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_params(ours, theirs)
    compare(ours, theirs, rng.standard_normal((7, 3, 4)), rng)
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours.forward(np.ones((2, 3, 4))),
                               theirs(torch.ones(2, 3, 4, dtype=torch.float64)).detach().numpy(), **TOL)


def test_torch_state_dict_loads_into_normlab(rng):
    theirs = torch_small_net()
    theirs(torch.randn(9, 3, 4, dtype=torch.float64))  # move the running statistics away from 0 and 1
    ours = small_net(rng)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((4, 3, 4))
    np.testing.assert_allclose(ours.forward(x), theirs(torch.tensor(x)).detach().numpy(), **TOL)
    assert int(ours[2].num_batches_tracked) == 1
