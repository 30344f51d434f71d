"""FullyConnectedNet: CS231n's sanity checks, a numerical gradient check of every parameter, its
regularization, the registry, and a PyTorch twin that loads its state dict."""

import math

import numpy as np
import pytest

from normlab.functional import softmax_cross_entropy
from normlab.gradcheck import numerical_gradient, relative_error
from normlab.models import FullyConnectedNet, available_models, build_model, model_builder
from normlab.models.regularization import decay_groups, weight_parameters
from normlab.nn import (
    BatchNorm1d,
    BatchRenorm1d,
    Dropout,
    Flatten,
    GhostBatchNorm1d,
    GroupNorm,
    LayerNorm,
    Linear,
    ReLU,
    RenormSchedule,
    Sigmoid,
    Tanh,
    build_norm,
)
from normlab.optim import Adam
from normlab.train import Trainer


def loss_and_backward(net, x, y):
    net.zero_grad()
    loss, dscores = softmax_cross_entropy(net.forward(x), y)
    net.backward(dscores)
    net.regularization_backward()
    return loss + net.regularization_loss()


@pytest.mark.parametrize("normalization", ["none", "batch", "layer", "group"])
def test_initial_loss_is_ln_of_the_number_of_classes(normalization, rng):
    net = FullyConnectedNet(3 * 8 * 8, (50, 40), 10, normalization=normalization, weight_scale=1e-3, rng=rng)
    x = rng.standard_normal((200, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 200)
    loss, _ = softmax_cross_entropy(net.forward(x), y)
    assert abs(loss - math.log(10)) < 0.02


def test_regularization_raises_the_initial_loss_by_half_reg_sum_of_squares(rng):
    net = FullyConnectedNet(20, (30,), 10, normalization="none", weight_scale=1e-2, reg=3.14, rng=rng,
                            dtype=np.float64)
    expected = 0.5 * 3.14 * sum(np.sum(net[i].weight.data ** 2) for i in (1, 3))
    assert net.regularization_loss() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("normalization", ["none", "batch"])
def test_overfits_fifty_examples(normalization):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    net = FullyConnectedNet(64, (100, 100), 10, normalization=normalization, rng=rng)
    trainer = Trainer(net, Adam(net.parameters(), lr=1e-2), x, y, x[:0], y[:0], epochs=20, batch_size=25,
                      rng=rng, progress=False, log=lambda s: None)
    assert trainer.fit().status == "completed"
    assert trainer.accuracy(x, y) == 1.0


@pytest.mark.parametrize("normalization, activation", [("batch", "relu"), ("layer", "relu"), ("group", "relu"),
                                                       ("ghost", "relu"), ("batch", "sigmoid"), ("none", "tanh")])
def test_six_layer_net_passes_a_float64_gradient_check_on_every_parameter(normalization, activation):
    rng = np.random.default_rng(5)
    net = FullyConnectedNet(12, (10, 8, 8, 6, 6), 5, normalization=normalization, num_groups=2, reg=0.3,
                            weight_scale=0.5, activation=activation, virtual_batch_size=4, rng=rng,
                            dtype=np.float64)
    assert sum(isinstance(m, Linear) for m in net.modules()) == 6
    for p in net.parameters():
        if p.data.ndim == 1:  # gamma, beta, biases away from 1 and 0 so their gradients are not special
            p.data[...] = rng.standard_normal(p.shape)
    x = rng.standard_normal((7, 12))
    y = rng.integers(0, 5, 7)
    loss_and_backward(net, x, y)
    biases_before_batchnorm = {f"{i}.bias" for i in range(len(net) - 1)
                               if isinstance(net[i + 1], (BatchNorm1d, GhostBatchNorm1d))}
    for name, p in net.named_parameters():
        def loss(_):
            return softmax_cross_entropy(net.forward(x), y)[0] + net.regularization_loss()

        numerical = numerical_gradient(loss, p.data)
        if name in biases_before_batchnorm:
            # A bias right before batch norm is removed by its mean subtraction: both gradients are 0.
            assert np.abs(p.grad).max() < 1e-12 and np.abs(numerical).max() < 1e-8, name
            continue
        assert relative_error(p.grad, numerical) < 1e-6, name


def test_dropout_layers_use_their_own_generators(rng):
    net = FullyConnectedNet(10, (8, 8), 3, dropout=0.5, rng=rng)
    drops = [m for m in net.modules() if isinstance(m, Dropout)]
    assert len(drops) == 2 and drops[0].rng is not drops[1].rng and drops[0].p == 0.5


def test_layers_and_initialization(rng):
    net = FullyConnectedNet(784, (512, 256), 10, normalization="batch", rng=rng)
    linears = [m for m in net.modules() if isinstance(m, Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 256), (256, 10)]
    assert sum(isinstance(m, BatchNorm1d) for m in net.modules()) == 2
    assert abs(linears[0].weight.data.std() - math.sqrt(2 / 784)) < 0.002  # He
    assert all(np.all(m.bias.data == 0) for m in linears)
    fixed = FullyConnectedNet(784, (512,), 10, normalization="none", weight_scale=0.05, rng=rng)
    assert abs(fixed[1].weight.data.std() - 0.05) < 0.002
    assert isinstance(FullyConnectedNet(8, (4,), 2, normalization="layer", rng=rng)[2], LayerNorm)
    group = FullyConnectedNet(8, (100,), 2, normalization="group", rng=rng)[2]
    assert isinstance(group, GroupNorm) and group.num_groups == 25  # the largest divisor of 100 up to 32


def test_l2_leaves_gamma_beta_and_biases_alone(rng):
    net = FullyConnectedNet(6, (5, 4), 3, normalization="batch", reg=0.5, rng=rng, dtype=np.float64)
    weights = weight_parameters(net)
    assert [p.shape for p in weights] == [(5, 6), (4, 5), (3, 4)]
    net.zero_grad()
    net.regularization_backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    for name, p in net.named_parameters():
        if name.endswith("weight") and p.data.ndim == 2:
            np.testing.assert_allclose(grads[name], 0.5 * p.data)
        else:
            assert grads[name] is None, name
    groups = decay_groups(net, 0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(net.parameters())


def test_renorm_ghost_and_activation_options_pick_their_layers(rng):
    short = RenormSchedule(warmup_steps=10, rmax_full_at=100, dmax_full_at=50)
    net = FullyConnectedNet(8, (6, 4), 3, normalization="renorm", renorm_schedule=short, activation="sigmoid",
                            rng=rng)
    renorms = [m for m in net.modules() if isinstance(m, BatchRenorm1d)]
    assert [m.num_features for m in renorms] == [6, 4] and all(m.schedule is short for m in renorms)
    assert sum(isinstance(m, Sigmoid) for m in net.modules()) == 2 and not any(isinstance(m, ReLU) for m in net)
    ghost = FullyConnectedNet(8, (6,), 3, normalization="ghost", virtual_batch_size=4, activation="tanh", rng=rng)
    assert isinstance(ghost[2], GhostBatchNorm1d) and ghost[2].virtual_batch_size == 4
    assert isinstance(ghost[3], Tanh)
    default = build_model("fcnet", input_shape=(1, 2, 4), num_classes=3, rng=rng, normalization="renorm")
    assert default[2].schedule == RenormSchedule()  # Ioffe's 40000-step relaxation unless told otherwise


@pytest.mark.parametrize("normalization", ["renorm", "ghost"])
def test_l2_leaves_renorm_and_ghost_gamma_alone(normalization, rng):
    net = FullyConnectedNet(6, (5, 4), 3, normalization=normalization, reg=0.5, rng=rng)
    assert [p.shape for p in weight_parameters(net)] == [(5, 6), (4, 5), (3, 4)]


def test_ghost_net_trains_with_batches_split_into_virtual_batches():
    rng = np.random.default_rng(3)
    net = FullyConnectedNet(6, (5,), 3, normalization="ghost", virtual_batch_size=4, rng=rng, dtype=np.float64)
    x = rng.standard_normal((10, 6))
    net.forward(x)
    assert int(net[2].num_batches_tracked) == 3  # chunks of 4, 4 and 2


@pytest.mark.parametrize("kwargs, message", [
    ({"normalization": "weight"}, (r"normalization must be one of \('none', 'batch', 'layer', 'group', 'instance', "
                                   r"'renorm', 'ghost'\), got 'weight'")),
    ({"normalization": "instance"}, r"'instance' needs \(N, C, H, W\) maps"),
    ({"placement": "inside"}, r"placement must be one of \('before', 'after'\).*got 'inside'"),
    ({"norm_options": {"groups": 2}}, (r"normalization 'batch' does not take the option 'groups' \(it takes eps, "
                                       r"momentum\)")),
    ({"input_shape": (1, 0, 2)}, r"input_shape must be a positive integer or one sample's shape"),
    ({"activation": "gelu"}, r"activation must be one of \('relu', 'sigmoid', 'tanh'\), got 'gelu'"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"weight_scale": "xavier"}, "weight_scale must be 'he' or a positive number, got 'xavier'"),
    ({"reg": -1.0}, "reg must be >= 0"),
    ({"normalization": "group", "num_groups": 3}, "groups must divide the number of channels, got groups=3 for 8"),
])
def test_bad_options_are_named(kwargs, message, rng):
    kwargs = {"input_shape": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        FullyConnectedNet(hidden_dims=(8,), num_classes=2, rng=rng, **kwargs)


def test_registry_builds_a_batch_normalized_fcnet_by_default(rng):
    assert "fcnet" in available_models()
    net = build_model("fcnet", input_shape=(1, 28, 28), num_classes=10, rng=rng)
    assert isinstance(net, FullyConnectedNet) and net.normalization == "batch" and net.hidden_dims == (512, 256)
    assert not getattr(model_builder("fcnet"), "default_augment", False)
    with pytest.raises(ValueError, match=r"model must be one of \[.*'fcnet'.*\], got 'nope'"):
        build_model("nope", input_shape=(1, 2, 2), num_classes=2, rng=rng)


def test_a_torch_twin_loads_the_state_dict_and_agrees(rng):
    torch = pytest.importorskip("torch")
    net = FullyConnectedNet(12, (8, 6), 4, normalization="batch", dropout=0.2, rng=rng, dtype=np.float64)
    x = rng.standard_normal((16, 3, 2, 2))
    net.forward(x)  # running statistics away from their initial values
    t = torch.nn
    twin = t.Sequential(t.Flatten(), t.Linear(12, 8), t.BatchNorm1d(8), t.ReLU(), t.Dropout(0.2), t.Linear(8, 6),
                        t.BatchNorm1d(6), t.ReLU(), t.Dropout(0.2), t.Linear(6, 4)).double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    net.eval()
    twin.eval()
    np.testing.assert_allclose(net.forward(x), twin(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_the_class_and_its_registered_builder_default_to_batch_norm_before_the_nonlinearity(rng):
    net = FullyConnectedNet(6, (4,), 2, rng=rng)
    built = build_model("fcnet", input_shape=(6,), num_classes=2, hidden_dims=(4,), rng=rng)
    for model in (net, built):
        assert model.normalization == "batch" and model.placement == "before"
        assert [type(m) for m in model] == [Flatten, Linear, BatchNorm1d, ReLU, Linear]


@pytest.mark.parametrize("normalization", ["batch", "layer", "group", "renorm", "ghost"])
def test_placement_after_puts_the_normalization_after_the_nonlinearity(normalization, rng):
    net = FullyConnectedNet(6, (8, 4), 3, normalization=normalization, placement="after", activation="sigmoid",
                            dropout=0.1, rng=rng)
    kinds = [type(m) for m in net]
    norm = type(build_norm(normalization, 8))
    assert kinds == [Flatten, Linear, Sigmoid, norm, Dropout, Linear, Sigmoid, norm, Dropout, Linear]
    assert net.placement == "after"


@pytest.mark.parametrize("placement", ["before", "after"])
def test_placement_after_passes_a_float64_gradient_check(placement):
    rng = np.random.default_rng(8)
    net = FullyConnectedNet(5, (6, 4), 3, normalization="batch", placement=placement, weight_scale=0.7, rng=rng,
                            dtype=np.float64)
    for p in net.parameters():
        if p.data.ndim == 1:
            p.data[...] = rng.standard_normal(p.shape)
    x, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    loss_and_backward(net, x, y)
    for name, p in net.named_parameters():
        numerical = numerical_gradient(lambda _: softmax_cross_entropy(net.forward(x), y)[0], p.data)
        if placement == "before" and name in ("1.bias", "4.bias"):  # removed by the mean subtraction after it
            continue
        assert relative_error(p.grad, numerical) < 1e-6, name


def test_norm_options_reach_the_layers_and_the_shorthands_still_work(rng):
    group = FullyConnectedNet(8, (16,), 2, normalization="group", norm_options={"groups": 4, "eps": 1e-3}, rng=rng)
    assert group[2].num_groups == 4 and group[2].eps == 1e-3
    assert FullyConnectedNet(8, (16,), 2, normalization="group", num_groups=2, rng=rng)[2].num_groups == 2
    ghost = FullyConnectedNet(8, (16,), 2, normalization="ghost", norm_options={"virtual_batch_size": 5}, rng=rng)
    assert ghost[2].virtual_batch_size == 5
    renorm = FullyConnectedNet(8, (16,), 2, normalization="renorm", rng=rng,
                               norm_options={"rmax": 2.0, "dmax": 1.0, "warmup_steps": 0, "rmax_full_at": 10,
                                             "dmax_full_at": 5})
    assert renorm[2].schedule == RenormSchedule(2.0, 1.0, 0, 10, 5) and renorm.norm_options["rmax"] == 2.0


def test_rng_is_optional_and_a_seeded_build_is_bit_identical():
    a = FullyConnectedNet(6, (5,), 3, dropout=0.2, rng=np.random.default_rng(4))
    b = FullyConnectedNet(6, (5,), 3, dropout=0.2, rng=np.random.default_rng(4))
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    unseeded = [FullyConnectedNet(6, (5,), 3) for _ in range(2)]  # a fresh generator each: different draws
    assert not np.array_equal(unseeded[0][1].weight.data, unseeded[1][1].weight.data)
    assert build_model("fcnet", input_shape=(6,), num_classes=3, hidden_dims=(5,))[1].weight.shape == (5, 6)


def test_input_shape_is_the_features_or_one_examples_shape_and_input_dim_is_deprecated(rng):
    assert FullyConnectedNet((3, 4, 2), (5,), 2, rng=rng)[1].in_features == 24
    assert FullyConnectedNet(input_shape=24, hidden_dims=(5,), rng=rng)[1].in_features == 24
    with pytest.warns(DeprecationWarning, match=r"input_dim=\.\.\.\) is deprecated: use input_shape="):
        old = FullyConnectedNet(input_dim=24, hidden_dims=(5,), rng=rng)
    assert old[1].in_features == 24
    with pytest.raises(TypeError, match="input_shape or its old name input_dim, not both"), \
            pytest.warns(DeprecationWarning):
        FullyConnectedNet(24, input_dim=24, rng=rng)
    with pytest.raises(TypeError, match="FullyConnectedNet needs input_shape"):
        FullyConnectedNet(rng=rng)
