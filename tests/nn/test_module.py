"""Module machinery: registration, modes, gradients, state dicts and their errors, Dropout, Flatten."""

import numpy as np
import pytest

from normlab import nn
from normlab.gradcheck import numerical_gradient, relative_error


def make_net(rng, dtype=np.float64):
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 8, rng=rng, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype),
                         nn.ReLU(), nn.Linear(8, 8, rng=rng, dtype=dtype), nn.GroupNorm(2, 8, dtype=dtype),
                         nn.Sigmoid(), nn.Linear(8, 8, rng=rng, dtype=dtype), nn.LayerNorm(8, dtype=dtype),
                         nn.Tanh(), nn.Linear(8, 3, rng=rng, dtype=dtype))


def test_every_parameter_and_input_gradient_matches_numerical_gradient(rng):
    net = make_net(rng)
    for p in net.parameters():  # move gamma and beta away from 1 and 0 so their gradients matter
        p.data[...] = rng.standard_normal(p.shape)
    x = rng.standard_normal((5, 2, 3))
    dout = rng.standard_normal((5, 3))
    net.forward(x)
    dx = net.backward(dout)
    assert relative_error(dx, numerical_gradient(net.forward, x, dout)) < 1e-7
    for name, p in net.named_parameters():
        def f(_, p=p):
            return net.forward(x)
        numerical = numerical_gradient(f, p.data, dout)
        if name == "1.bias":  # batch norm subtracts the batch mean, so a bias before it has no effect
            assert np.abs(p.grad).max() < 1e-12 and np.abs(numerical).max() < 1e-8
            continue
        err = relative_error(p.grad, numerical)
        assert err < 1e-7, f"{name}: relative error {err:.1e}"


def test_backward_accumulates_until_zero_grad(rng):
    lin = nn.Linear(3, 2, rng=rng, dtype=np.float64)
    x, dout = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    lin.forward(x)
    lin.backward(dout)
    first = lin.weight.grad.copy()
    lin.backward(dout)
    np.testing.assert_allclose(lin.weight.grad, 2 * first)
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None


def test_backward_before_forward_is_an_error(rng):
    with pytest.raises(RuntimeError, match="Linear.backward called before forward"):
        nn.Linear(3, 2, rng=rng).backward(np.ones((1, 2), np.float32))


def test_train_and_eval_reach_every_submodule(rng):
    net = make_net(rng)
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_parameters_buffers_and_names(rng):
    net = make_net(rng)
    names = [n for n, _ in net.named_parameters()]
    assert names[:4] == ["1.weight", "1.bias", "2.weight", "2.bias"]
    assert [n for n, _ in net.named_buffers()] == ["2.running_mean", "2.running_var", "2.num_batches_tracked"]
    assert len(net.parameters()) == len(names) == 14


def test_state_dict_returns_copies(rng):
    net = make_net(rng)
    state = net.state_dict()
    state["1.weight"][...] = 0
    state["2.running_mean"][...] = 5
    assert not np.all(net[1].weight.data == 0)
    assert np.all(net[2].running_mean == 0)


def test_load_state_dict_copies_values_and_round_trips(rng):
    a, b = make_net(rng), make_net(np.random.default_rng(99))
    a.forward(rng.standard_normal((4, 6)))  # changes the running statistics
    b.load_state_dict(a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)
    assert b[1].weight.data is not a[1].weight.data


def test_load_state_dict_names_missing_and_unexpected_keys(rng):
    net = make_net(rng)
    state = net.state_dict()
    del state["1.bias"]
    state["9.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match=r"missing keys \['1.bias'\], unexpected keys \['9.weight'\]"):
        net.load_state_dict(state)
    net.load_state_dict(state, strict=False)  # loads what matches, ignores the rest


def test_load_state_dict_rejects_a_wrong_shape(rng):
    net = make_net(rng)
    state = net.state_dict()
    state["1.weight"] = np.zeros((8, 5))
    with pytest.raises(ValueError, match=r"1.weight: expected shape \(8, 6\) in the state dict, got \(8, 5\)"):
        net.load_state_dict(state)


@pytest.mark.parametrize("bad_key, bad_value, error, message", [
    ("10.weight", np.zeros((3, 7)), ValueError, r"10.weight: expected shape \(3, 8\)"),  # the last key
    ("4.weight", np.full((8, 8), "x"), TypeError, r"4.weight: expected a float64 array .* got <U1"),
    ("2.num_batches_tracked", np.array(1.5), TypeError, r"2.num_batches_tracked: expected a int64 array"),
    ("2.running_var", np.ones(8, np.complex128), TypeError, r"got complex128"),
])
def test_load_state_dict_is_all_or_nothing(rng, bad_key, bad_value, error, message):
    """The reported case: one mis-shaped key raised after the other tensors were overwritten, leaving the
    model half-loaded. Every entry is now checked before any is copied."""
    net = make_net(rng)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    state = {k: v + 1 for k, v in net.state_dict().items()}
    state[bad_key] = bad_value
    with pytest.raises(error, match=message):
        net.load_state_dict(state)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a failed load")


def test_parameter_rejects_non_float_data():
    with pytest.raises(TypeError, match="floating-point"):
        nn.Parameter(np.zeros(3, dtype=np.int64))
    p = nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match=r"gradient must have the parameter's shape \(3,\), got \(4,\)"):
        p.accumulate_grad(np.zeros(4))


def test_dropout_masks_in_training_and_is_identity_in_eval(rng):
    drop = nn.Dropout(0.25, rng=np.random.default_rng(0))
    x = np.ones((400, 50), np.float32)
    out = drop.forward(x)
    kept = out != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(drop.backward(x), out)  # the same mask scales the gradient
    drop.eval()
    assert drop.forward(x) is x


def test_dropout_masks_come_from_its_generator():
    x = np.ones((10, 10), np.float32)
    a = nn.Dropout(0.5, rng=np.random.default_rng(7)).forward(x)
    b = nn.Dropout(0.5, rng=np.random.default_rng(7)).forward(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_probabilities(p):
    with pytest.raises(ValueError, match="p must"):
        nn.Dropout(p)


def test_flatten_round_trips_shapes(rng):
    flat = nn.Flatten()
    x = rng.standard_normal((2, 3, 4, 5))
    assert flat.forward(x).shape == (2, 60)
    assert flat.backward(np.ones((2, 60))).shape == (2, 3, 4, 5)


def test_normalization_modules_name_the_bad_input():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\) expected 4 channels in dimension 1, got input of shape \(2, 5\)"):
        nn.BatchNorm1d(4).forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="BatchNorm2d expected 4D input, got 2D input"):
        nn.BatchNorm2d(4).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="num_groups must divide num_channels=6, got num_groups=4"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="num_features must be a positive integer"):
        nn.BatchNorm1d(0)


def test_modules_preserve_float32(rng):
    net = make_net(rng, dtype=np.float32)
    out = net.forward(rng.standard_normal((4, 6)).astype(np.float32))
    assert out.dtype == np.float32
    net.backward(np.ones_like(out))
    assert all(p.grad.dtype == np.float32 for p in net.parameters())


def test_input_grad_skipped_spares_the_first_layer_only_and_restores_it(rng):
    """Inside `input_grad_skipped`, a model returns no input gradient (its first layer with parameters, a
    Linear after a Flatten or a Conv2d, skips that product) and every parameter gradient is unchanged;
    afterwards the model returns dx again."""
    for net, x in ((make_net(rng), rng.standard_normal((4, 2, 3))),
                   (nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64), nn.ReLU()),
                    rng.standard_normal((2, 2, 5, 5)))):
        dout = rng.standard_normal(net.forward(x).shape)
        dx = net.backward(dout)
        full = {name: p.grad.copy() for name, p in net.named_parameters()}
        net.zero_grad()
        with nn.input_grad_skipped(net):
            assert net.backward(dout) is None
        for name, p in net.named_parameters():
            np.testing.assert_array_equal(p.grad, full[name], err_msg=name)
        assert net.needs_input_grad and all(m.needs_input_grad for m in net.modules())
        np.testing.assert_array_equal(net.backward(dout), dx)
