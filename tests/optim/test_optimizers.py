"""Optimizer updates against values computed by hand, against torch.optim, and across a checkpoint."""

import math

import numpy as np
import pytest

from normlab.nn import Parameter
from normlab.optim import SGD, Adam, AdamW, RMSProp


def param(*values, grad=None):
    p = Parameter(np.array(values, dtype=np.float64))
    p.grad = None if grad is None else np.array(grad, dtype=np.float64)
    return p


def test_sgd_step_is_lr_times_gradient():
    p = param(1.0, -2.0, grad=[0.5, 4.0])
    SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.4], rtol=0, atol=1e-15)


def test_sgd_momentum_by_hand():
    # v1 = g1 = 1; p = 1 - 0.1 * 1 = 0.9.  v2 = 0.9 * 1 + 2 = 2.9; p = 0.9 - 0.29 = 0.61.
    p = param(1.0, grad=[1.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    assert p.data[0] == pytest.approx(0.9, abs=1e-15)
    p.grad = np.array([2.0])
    opt.step()
    assert p.data[0] == pytest.approx(0.61, abs=1e-15)


def test_sgd_nesterov_by_hand():
    # v1 = 1; step d + mu v = 1 + 0.9 = 1.9; p = 1 - 0.19 = 0.81.
    # v2 = 0.9 + 2 = 2.9; step 2 + 0.9 * 2.9 = 4.61; p = 0.81 - 0.461 = 0.349.
    p = param(1.0, grad=[1.0])
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    opt.step()
    assert p.data[0] == pytest.approx(0.81, abs=1e-15)
    p.grad = np.array([2.0])
    opt.step()
    assert p.data[0] == pytest.approx(0.349, abs=1e-15)


def test_sgd_weight_decay_adds_wd_times_p():
    p = param(2.0, grad=[1.0])
    SGD([p], lr=0.1, weight_decay=0.5).step()  # d = 1 + 0.5 * 2 = 2
    assert p.data[0] == pytest.approx(1.8, abs=1e-15)


def test_rmsprop_by_hand():
    # s = 0.01 * 4 = 0.04, sqrt = 0.2; p = 1 - 0.01 * 2 / (0.2 + 1e-8).
    p = param(1.0, grad=[2.0])
    opt = RMSProp([p], lr=0.01)
    opt.step()
    assert p.data[0] == pytest.approx(1 - 0.01 * 2 / (0.2 + 1e-8), abs=1e-15)
    # s = 0.99 * 0.04 + 0.01 * 1 = 0.0496.
    p.grad = np.array([1.0])
    expected = p.data[0] - 0.01 * 1 / (math.sqrt(0.0496) + 1e-8)
    opt.step()
    assert p.data[0] == pytest.approx(expected, abs=1e-15)


def test_adam_by_hand():
    # Step 1: m = 0.1 g, v = 0.001 g^2; bias-corrected they are g and g^2, so the step is lr * g / (|g| + eps).
    p = param(1.0, grad=[2.0])
    opt = Adam([p], lr=0.1)
    opt.step()
    assert p.data[0] == pytest.approx(1 - 0.1 * 2 / (2 + 1e-8), abs=1e-15)
    # Step 2 with g = -1: m = 0.9 * 0.2 - 0.1 = 0.08, v = 0.999 * 0.004 + 0.001 = 0.004996.
    p.grad = np.array([-1.0])
    m_hat, v_hat = 0.08 / (1 - 0.81), 0.004996 / (1 - 0.999**2)
    expected = p.data[0] - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    opt.step()
    assert p.data[0] == pytest.approx(expected, abs=1e-15)
    assert opt.state[0][0]["step"] == 2


def test_adamw_decays_before_the_adam_step():
    p = param(2.0, grad=[2.0])
    AdamW([p], lr=0.1, weight_decay=0.5).step()
    # p = 2 * (1 - 0.05) = 1.9, then the Adam step of 0.1 * 2 / (2 + 1e-8).
    assert p.data[0] == pytest.approx(1.9 - 0.1 * 2 / (2 + 1e-8), abs=1e-15)


def test_adam_weight_decay_is_coupled_into_the_gradient():
    p, q = param(2.0, grad=[1.0]), param(2.0, grad=[1.0 + 0.5 * 2.0])
    Adam([p], lr=0.1, weight_decay=0.5).step()
    Adam([q], lr=0.1).step()
    assert p.data[0] == q.data[0]


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_many_steps_match_torch_optim(name, rng):
    torch = pytest.importorskip("torch")
    ours_cls, theirs_cls, kwargs = {
        "sgd": (SGD, torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.01}),
        "momentum": (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        "nesterov": (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "nesterov": True}),
        "rmsprop": (RMSProp, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.1}),
        "adam": (Adam, torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
        "adamw": (AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    }[name]
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    ours = [Parameter(w.copy()), Parameter(b.copy())]
    theirs = [torch.nn.Parameter(torch.tensor(w)), torch.nn.Parameter(torch.tensor(b))]
    # Two groups: the second without weight decay, as for gamma and beta.
    opt = ours_cls([{"params": ours[:1]}, {"params": ours[1:], "weight_decay": 0.0}], **kwargs)
    topt = theirs_cls([{"params": theirs[:1]}, {"params": theirs[1:], "weight_decay": 0.0}], **kwargs)
    for _ in range(6):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad, t.grad = g, torch.tensor(g)
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda ps: RMSProp(ps), lambda ps: Adam(ps), lambda ps: AdamW(ps)])
def test_state_dict_round_trip_continues_bit_identically(make, rng):
    grads = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(8)]
    start = rng.standard_normal((2, 3)).astype(np.float32)

    def run(steps, opt, p):
        for g in steps:
            p.grad = g.copy()
            opt.step()

    p = Parameter(start.copy())
    uninterrupted = make([p])
    run(grads, uninterrupted, p)

    q = Parameter(start.copy())
    first = make([q])
    run(grads[:3], first, q)
    arrays, meta = first.state_dict()
    import json
    meta = json.loads(json.dumps(meta))  # what a checkpoint stores
    second = make([q])
    second.load_state_dict(arrays, meta)
    run(grads[3:], second, q)
    assert np.array_equal(p.data, q.data)


def test_parameters_without_gradient_are_left_alone():
    p, q = param(1.0, grad=[1.0]), param(5.0)
    opt = Adam([p, q], lr=0.1)
    opt.step()
    assert p.data[0] != 1.0
    assert q.data[0] == 5.0 and opt.state[0][1] == {}


def test_zero_grad_and_lr_factor():
    p = param(1.0, grad=[1.0])
    opt = SGD([p], lr=0.2)
    opt.set_lr_factor(0.5)
    assert opt.lr == pytest.approx(0.1)
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("make, message", [
    (lambda ps: SGD(ps, lr=-1), "lr must be >= 0, got -1"),
    (lambda ps: SGD(ps, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
    (lambda ps: SGD(ps, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda ps: RMSProp(ps, eps=0), "eps must be > 0"),
    (lambda ps: Adam(ps, betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\), got 1.0"),
    (lambda ps: Adam(ps, weight_decay=-0.1), "weight_decay must be >= 0"),
    (lambda ps: Adam([{"params": ps, "momentum": 0.9}]), r"unknown options \['momentum'\]"),
    (lambda ps: Adam([]), "empty parameter list"),
    (lambda ps: Adam([{"params": ps}, {"params": ps}]), "more than one parameter group"),
])
def test_bad_hyperparameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make([param(1.0)])


def test_non_parameters_are_refused():
    with pytest.raises(TypeError, match="optimizers take parameters"):
        SGD([np.zeros(3)])


def test_load_state_dict_checks_the_optimizer_and_shapes():
    p = param(1.0, 2.0, grad=[1.0, 1.0])
    opt = Adam([p])
    opt.step()
    arrays, meta = opt.state_dict()
    with pytest.raises(ValueError, match="optimizer state is for 'Adam', not 'SGD'"):
        SGD([p]).load_state_dict(arrays, meta)
    with pytest.raises(ValueError, match=r"expected shape \(3,\), got \(2,\)"):
        Adam([param(1.0, 2.0, 3.0)]).load_state_dict(arrays, meta)
    with pytest.raises(ValueError, match="saved group sizes"):
        Adam([param(1.0), param(2.0)]).load_state_dict(arrays, meta)
