"""PyTorch as the test oracle for the convolutional layers: run a torch function on NumPy arrays and
return its output and the gradients of every input, in float64."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.gradcheck import relative_error

torch = pytest.importorskip("torch", reason="PyTorch is the test oracle: pip install 'normlab[test]'")

FLOAT64_TOLERANCE = 1e-10  # norm-wise relative error between normlab and torch, both in float64


def torch_run(fn, inputs, dout):
    """fn(*tensors) on float64 leaf tensors of `inputs` (None passes through); backward with `dout`.

    Returns (out, [grad of each input, None for None inputs]) as NumPy arrays.
    """
    leaves = [None if a is None else torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in inputs]
    out = fn(*leaves)
    out.backward(torch.tensor(np.asarray(dout, np.float64)))
    return out.detach().numpy(), [None if leaf is None else leaf.grad.numpy() for leaf in leaves]


def assert_close(ours, theirs, name: str, tolerance: float = FLOAT64_TOLERANCE) -> None:
    assert np.shape(ours) == np.shape(theirs), f"{name}: shape {np.shape(ours)} != {np.shape(theirs)}"
    error = relative_error(ours, theirs)
    assert error <= tolerance, f"{name}: relative error {error:.2e} > {tolerance:.0e}"


def assert_module_matches_torch(ours, theirs, x: np.ndarray, rng: np.random.Generator,
                                tolerance: float = FLOAT64_TOLERANCE) -> None:
    """Give `ours` (a float64 normlab module) `theirs`'s state, run both forward and backward on x, and
    compare the output, dx, every parameter's gradient and, afterwards, every buffer, by state dict name."""
    theirs = theirs.double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    out = ours.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = ours.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    t_out = theirs(tx)
    t_out.backward(torch.tensor(dout))
    assert_close(out, t_out.detach().numpy(), "out", tolerance)
    assert_close(dx, tx.grad.numpy(), "dx", tolerance)
    t_params = dict(theirs.named_parameters())
    assert sorted(dict(ours.named_parameters())) == sorted(t_params)
    for name, p in ours.named_parameters():
        assert_close(p.grad, t_params[name].grad.numpy(), f"d{name}", tolerance)
    t_state = theirs.state_dict()
    assert list(ours.state_dict()) == list(t_state)
    for name, value in ours.state_dict().items():
        assert_close(value, t_state[name].numpy(), name, tolerance)
