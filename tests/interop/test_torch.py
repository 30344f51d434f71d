"""normlab <-> PyTorch twins: the same forward (train and eval), gradients and running statistics after
SGD steps, lossless round trips, PyTorch state dict names, and clear errors."""

from collections import OrderedDict

import numpy as np
import pytest

from normlab import nn
from normlab.interop import fold_batchnorm, from_torch, to_torch
from normlab.interop.registry import ConverterRegistry
from normlab.interop.torch import TORCH_TWINS, TorchTwin

FLOAT32 = 1e-5
FLOAT64 = 1e-12
LR = 0.1


def torch_loss_and_grads(torch, twin, x, labels):
    """Cross-entropy of the twin on x, backpropagated: (loss, dx, {name: grad})."""
    xt = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(twin(xt), torch.from_numpy(labels))
    loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in twin.named_parameters()}
    return loss.item(), xt.grad.numpy(), grads


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_matches_torch(torch, make_model, make_batch, assert_close, kind, norm, training):
    model, shape = make_model(kind, norm)
    model.train(training)
    x, _ = make_batch(shape, seed=0)
    twin = to_torch(model)
    assert all(m.training == training for m in twin.modules())
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x)).numpy()
    assert_close(model(x), theirs, FLOAT32, "output")


def test_gradients_of_every_parameter_match_torch(torch, make_model, make_batch, normlab_step, assert_close,
                                                  assert_grads_close, kind, norm):
    model, shape = make_model(kind, norm)
    x, labels = make_batch(shape, seed=0)
    twin = to_torch(model)
    loss, dx, grads = normlab_step(model, x, labels)
    t_loss, t_dx, t_grads = torch_loss_and_grads(torch, twin, x, labels)
    assert loss == pytest.approx(t_loss, rel=FLOAT32)
    assert_close(dx, t_dx, FLOAT32, "dx")
    assert_grads_close(grads, t_grads, FLOAT32)


def test_three_sgd_steps_match_torch(torch, make_model, make_batch, normlab_step, assert_close, kind, norm):
    model, shape = make_model(kind, norm)
    twin = to_torch(model)
    for step in range(3):
        x, labels = make_batch(shape, seed=step)
        normlab_step(model, x, labels)
        for p in model.parameters():
            p.data -= LR * p.grad
        twin.zero_grad()
        torch_loss_and_grads(torch, twin, x, labels)
        with torch.no_grad():
            for p in twin.parameters():
                p -= LR * p.grad
    theirs = twin.state_dict()
    for name, ours in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            assert ours == theirs[name].item() == 7 + 3
        else:
            assert_close(ours, theirs[name].numpy(), FLOAT32, name)
    before = make_model(kind, norm)[0].state_dict()
    after = model.state_dict()
    assert all(not np.allclose(after[n], before[n]) for n in before if "running_" in n or n.endswith("weight"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_torch_numpy_is_lossless(torch, make_model, kind, norm, dtype):
    model, _ = make_model(kind, norm, dtype=dtype)
    model[1].eval()  # modes per layer carry over too
    back = from_torch(to_torch(model), rng=np.random.default_rng(0))
    assert repr(back) == repr(model)  # the same layers and hyperparameters
    ours, theirs = model.state_dict(), back.state_dict()
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype and np.array_equal(ours[name], theirs[name]), name
    assert [m.training for m in back.modules()] == [m.training for m in model.modules()]


def test_state_dict_names_dtypes_and_order_match_torch(torch, make_model, kind, norm):
    model, _ = make_model(kind, norm)
    theirs = to_torch(model).state_dict()
    assert list(theirs) == list(model.state_dict())
    for name, a in model.state_dict().items():
        assert theirs[name].numpy().dtype == a.dtype, name


def test_safetensors_checkpoint_loads_into_torch_twin_unchanged(torch, make_model, make_batch, assert_close, tmp_path):
    from safetensors.numpy import save_file
    from safetensors.torch import load_file

    trained, shape = make_model("image", "batch", seed=1)
    save_file(trained.state_dict(), str(tmp_path / "model.safetensors"))
    twin = to_torch(make_model("image", "batch", seed=2)[0]).eval()  # the same network, other weights
    twin.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    x, _ = make_batch(shape, seed=0)
    with torch.no_grad():
        assert_close(trained.eval()(x), twin(torch.from_numpy(x)).numpy(), FLOAT32, "output")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_float64_twin_matches_to_rounding(torch, make_model, make_batch, assert_close, norm, training):
    model, shape = make_model("image", norm, dtype=np.float64)
    model.train(training)
    x, _ = make_batch(shape, seed=0, dtype=np.float64)
    twin = to_torch(model)
    assert all(p.dtype == torch.float64 for p in twin.parameters())
    with torch.no_grad():
        assert_close(model(x), twin(torch.from_numpy(x)).numpy(), FLOAT64, "output")


def test_keras_convention_twin_predicts_the_same_but_updates_running_var_the_torch_way(
        torch, make_model, make_batch, assert_close):
    """torch stores the unbiased batch variance; a convention="keras" layer stores the biased one."""
    model, shape = make_model("mlp", "batch", convention="keras")
    twin = to_torch(model)
    x, _ = make_batch(shape, seed=0)
    with torch.no_grad():
        assert_close(model.eval()(x), twin.eval()(torch.from_numpy(x)).numpy(), FLOAT32, "eval output")
        model.train()(x), twin.train()(torch.from_numpy(x))
    bn, t_bn = model[1], twin[1]
    assert_close(bn.running_mean, t_bn.running_mean.numpy(), FLOAT32, "running_mean")
    # running_var = 0.9 * old + 0.1 * batch_var, batch_var biased (normlab) or unbiased (torch), M = 10
    batch_var_gap = (t_bn.running_var.numpy() - bn.running_var) / 0.1
    unbiased = model[0](x).var(axis=0, ddof=1)  # what torch added
    assert_close(batch_var_gap, unbiased / 10, 1e-4, "running_var difference")


def test_folded_model_exports_to_torch(torch, make_model, make_batch, assert_close):
    model, shape = make_model("mlp", "batch")
    folded = fold_batchnorm(model.eval())
    x, _ = make_batch(shape, seed=0)
    twin = to_torch(folded)
    assert isinstance(twin[1], torch.nn.Identity) and "1.running_mean" not in twin.state_dict()
    with torch.no_grad():
        assert_close(model(x), twin(torch.from_numpy(x)).numpy(), FLOAT32, "output")


def test_from_torch_keeps_torch_names_and_options(torch, assert_close):
    torch.manual_seed(0)
    net = torch.nn.Sequential(OrderedDict(
        fc=torch.nn.Linear(5, 4, bias=False),
        bn=torch.nn.BatchNorm1d(4, eps=1e-3, momentum=None, affine=False),
        act=torch.nn.Sigmoid(),
        drop=torch.nn.Dropout(0.25),
        out=torch.nn.Linear(4, 2),
    ))
    x = torch.randn(8, 5)
    net(x)  # give the running statistics values
    model = from_torch(net.eval(), rng=np.random.default_rng(0))
    assert list(model.state_dict()) == list(net.state_dict())
    options = (model.bn.momentum, model.bn.eps, model.bn.affine, model.fc.bias, model.drop.p)
    assert options == (None, 1e-3, False, None, 0.25)
    with torch.no_grad():
        assert_close(model(x.numpy()), net(x).numpy(), FLOAT32, "output")


def test_dropout_keeps_p_and_is_the_identity_in_eval(torch):
    twin = to_torch(nn.Dropout(0.3, rng=np.random.default_rng(0)).eval())
    assert isinstance(twin, torch.nn.Dropout) and twin.p == 0.3 and not twin.training
    x = torch.randn(4, 5)
    assert torch.equal(twin(x), x)


def test_a_new_layer_type_needs_only_a_registry_entry(torch, make_batch, assert_close):
    class Scale(nn.Module):  # a user's layer: out = x * weight
        def __init__(self, n):
            super().__init__()
            self.weight = nn.Parameter(np.arange(1, n + 1, dtype=np.float32))

        def forward(self, x):
            return x * self.weight.data

    class TorchScale(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(n))

        def forward(self, x):
            return x * self.weight

    TORCH_TWINS.register(Scale, TorchTwin(lambda t: TorchScale, lambda m, c: TorchScale(m.weight.shape[0]),
                                          lambda t, c: Scale(t.weight.shape[0])))
    model = nn.Sequential(Scale(6), nn.Tanh())
    x, _ = make_batch((6,), seed=0)
    twin = to_torch(model)
    with torch.no_grad():
        assert_close(model(x), twin(torch.from_numpy(x)).numpy(), FLOAT32, "output")
    assert isinstance(from_torch(twin)[0], Scale)


def test_registry_matches_exact_types_and_refuses_duplicates():
    registry = ConverterRegistry("a thing")
    registry.register(nn.BatchNorm1d, "bn")

    class MyBatchNorm(nn.BatchNorm1d):  # may compute something else: not converted until registered
        pass

    assert MyBatchNorm not in registry
    with pytest.raises(TypeError, match="no converter from MyBatchNorm to a thing"):
        registry.lookup(MyBatchNorm)
    registry.register(MyBatchNorm, registry.lookup(nn.BatchNorm1d))
    assert registry.lookup(MyBatchNorm) == "bn"
    with pytest.raises(ValueError, match="BatchNorm1d already has a converter to a thing"):
        registry.register(nn.BatchNorm1d, "other")
    registry.register(nn.BatchNorm1d, "other", replace=True)
    assert registry.lookup(nn.BatchNorm1d) == "other"
    with pytest.raises(TypeError, match=r"no converter from ReLU to a thing; supported: BatchNorm1d"):
        registry.lookup(nn.ReLU)


class Unsupported(nn.Module):
    pass


def test_errors_name_what_is_unsupported(torch):
    with pytest.raises(TypeError, match=r"no converter from Unsupported to a torch.nn.Module; supported: .*Linear"):
        to_torch(nn.Sequential(nn.ReLU(), Unsupported()))
    with pytest.raises(TypeError, match="model must be a normlab.nn.Module, got Linear"):
        to_torch(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, got Linear"):
        from_torch(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"no converter from GhostBatchNorm1d to a torch.nn.Module"):
        to_torch(nn.GhostBatchNorm1d(3, virtual_batch_size=2))
    with pytest.raises(TypeError, match=r"no converter from torch Conv1d to normlab; supported: .*BatchNorm1d"):
        from_torch(torch.nn.Sequential(torch.nn.Conv1d(2, 2, 1)))
    with pytest.raises(ValueError, match=r"LayerNorm\(bias=False\) has no normlab equivalent"):
        from_torch(torch.nn.LayerNorm(4, bias=False))
    with pytest.raises(ValueError, match=r"got torch Flatten\(start_dim=2, end_dim=-1\)"):
        from_torch(torch.nn.Flatten(start_dim=2))
    with pytest.raises(TypeError, match=r"torch.bfloat16 tensors.*module.float\(\)"):
        from_torch(torch.nn.Linear(2, 2).to(torch.bfloat16))
