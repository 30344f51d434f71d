"""What every normalization module gets from the shared base (`_Normalization`, and `_BatchNorm` for the
running statistics): PyTorch's parameter and buffer names, affine=False, gradient accumulation, the
momentum update of the running statistics (momentum=None: the cumulative average), reset, repr and the
input type check, checked on every module."""

import numpy as np
import pytest

from normlab import functional as F
from normlab import nn
from normlab.nn.normalization import _BatchNorm, _Normalization

pytestmark = pytest.mark.usefixtures("numpy_backend")  # affine=False against weight 1, bias 0, bit for bit

BN_BUFFERS = ["running_mean", "running_var", "num_batches_tracked"]

# name: (build(affine, **kwargs), input shape, parameter shape, buffers, torch twin(affine)); a ghost batch
# norm's input is one virtual batch, so that its running statistics move as batch norm's.
MODULES = {
    "BatchNorm1d": (lambda a, **k: nn.BatchNorm1d(3, affine=a, **k), (6, 3), (3,), BN_BUFFERS,
                    lambda t, a: t.nn.BatchNorm1d(3, affine=a)),
    "BatchNorm2d": (lambda a, **k: nn.BatchNorm2d(3, affine=a, **k), (4, 3, 2, 2), (3,), BN_BUFFERS,
                    lambda t, a: t.nn.BatchNorm2d(3, affine=a)),
    "LayerNorm": (lambda a, **k: nn.LayerNorm((3, 2), elementwise_affine=a, **k), (4, 3, 2), (3, 2), [],
                  lambda t, a: t.nn.LayerNorm((3, 2), elementwise_affine=a)),
    "GroupNorm": (lambda a, **k: nn.GroupNorm(2, 4, affine=a, **k), (3, 4, 2), (4,), [],
                  lambda t, a: t.nn.GroupNorm(2, 4, affine=a)),
    "InstanceNorm2d": (lambda a, **k: nn.InstanceNorm2d(3, affine=a, **k), (2, 3, 2, 2), (3,), [],
                       lambda t, a: t.nn.InstanceNorm2d(3, affine=a)),
    "BatchRenorm1d": (lambda a, **k: nn.BatchRenorm1d(3, affine=a, **k), (6, 3), (3,), BN_BUFFERS,
                      lambda t, a: t.nn.BatchNorm1d(3, affine=a)),
    "BatchRenorm2d": (lambda a, **k: nn.BatchRenorm2d(3, affine=a, **k), (4, 3, 2, 2), (3,), BN_BUFFERS,
                      lambda t, a: t.nn.BatchNorm2d(3, affine=a)),
    "GhostBatchNorm1d": (lambda a, **k: nn.GhostBatchNorm1d(3, 4, affine=a, **k), (4, 3), (3,), BN_BUFFERS,
                         lambda t, a: t.nn.BatchNorm1d(3, affine=a)),
    "GhostBatchNorm2d": (lambda a, **k: nn.GhostBatchNorm2d(3, 4, affine=a, **k), (4, 3, 2, 2), (3,), BN_BUFFERS,
                         lambda t, a: t.nn.BatchNorm2d(3, affine=a)),
    "SyncBatchNorm": (lambda a, **k: nn.SyncBatchNorm(3, affine=a, **k), (4, 3, 2, 2), (3,), BN_BUFFERS,
                      lambda t, a: t.nn.SyncBatchNorm(3, affine=a)),
}
NAMES = list(MODULES)
BATCHNORMS = [name for name in NAMES if MODULES[name][3]]


def build(name, affine=True, **kwargs):
    return MODULES[name][0](affine, **kwargs)


def data(rng, name, shift=0.0):
    return rng.standard_normal(MODULES[name][1]) * 2 + 1 + shift


@pytest.mark.parametrize("name", NAMES)
def test_every_normalization_shares_the_base(name):
    assert isinstance(build(name), _Normalization)
    assert isinstance(build(name), _BatchNorm) == (name in BATCHNORMS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_affine_parameters_are_weight_one_and_bias_zero_of_the_parameter_shape(name, dtype):
    module = build(name, dtype=dtype)
    (wname, weight), (bname, bias) = module.named_parameters()
    assert (wname, bname) == ("weight", "bias") and weight is module.weight and bias is module.bias
    assert weight.shape == bias.shape == MODULES[name][2]
    assert weight.data.dtype == bias.data.dtype == dtype
    np.testing.assert_array_equal(weight.data, 1)
    np.testing.assert_array_equal(bias.data, 0)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_are_torchs(name, affine):
    expected = (["weight", "bias"] if affine else []) + MODULES[name][3]
    module = build(name, affine)
    assert list(module.state_dict()) == expected
    torch = pytest.importorskip("torch")
    assert list(module.state_dict()) == list(MODULES[name][4](torch, affine).state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_without_affine_there_are_no_parameters_and_the_output_is_weight_one_bias_zero(name, rng):
    plain, affine = build(name, False, dtype=np.float64), build(name, True, dtype=np.float64)
    assert plain.weight is None and plain.bias is None and plain.parameters() == []
    assert not plain.affine and affine.affine
    x, dout = data(rng, name), rng.standard_normal(MODULES[name][1])
    np.testing.assert_array_equal(plain.forward(x), affine.forward(x))
    np.testing.assert_array_equal(plain.backward(dout), affine.backward(dout))
    plain.reset_parameters()  # nothing to reset, and no error


@pytest.mark.parametrize("name", NAMES)
def test_backward_adds_the_functional_gradients_into_weight_and_bias(name, rng):
    module = build(name, dtype=np.float64)
    module.weight.data[...] = rng.standard_normal(module.weight.shape)
    x, dout = data(rng, name), rng.standard_normal(MODULES[name][1])
    module.forward(x)
    _, dgamma, dbeta = module._backward_fn(dout, module._cache)
    module.backward(dout)
    np.testing.assert_array_equal(module.weight.grad, dgamma)
    np.testing.assert_array_equal(module.bias.grad, dbeta)
    np.testing.assert_array_equal(module.bias.grad, dbeta)
    module.forward(x)
    module.backward(dout)
    np.testing.assert_allclose(module.weight.grad, 2 * dgamma, rtol=1e-15)
    np.testing.assert_allclose(module.bias.grad, 2 * dbeta, rtol=1e-15)
    assert abs(dgamma).max() > 1e-3 and abs(dbeta).max() > 1e-3  # the check above could fail


def _batch_moments(x):
    axes = (0, *range(2, x.ndim))
    return x.mean(axis=axes), x.var(axis=axes, ddof=1)


@pytest.mark.parametrize("name", BATCHNORMS)
def test_running_statistics_move_by_momentum_towards_the_batch_statistics(name, rng):
    module = build(name, momentum=0.25, dtype=np.float64)
    x = data(rng, name, shift=3.0)
    module.forward(x)
    mean, var = _batch_moments(x)
    np.testing.assert_allclose(module.running_mean, 0.25 * mean, rtol=1e-13)
    np.testing.assert_allclose(module.running_var, 0.75 * 1 + 0.25 * var, rtol=1e-13)
    assert module.num_batches_tracked == 1 and module.num_batches_tracked.dtype == np.int64


@pytest.mark.parametrize("name", BATCHNORMS)
def test_momentum_none_is_the_cumulative_average_of_the_batches(name, rng):
    module = build(name, momentum=None, dtype=np.float64)
    batches = [data(rng, name, shift=k) for k in range(3)]
    for x in batches:
        module.forward(x)
    means, variances = zip(*map(_batch_moments, batches))
    np.testing.assert_allclose(module.running_mean, np.mean(means, axis=0), rtol=1e-13)
    np.testing.assert_allclose(module.running_var, np.mean(variances, axis=0), rtol=1e-13)
    assert module.num_batches_tracked == 3


@pytest.mark.parametrize("name", BATCHNORMS)
def test_evaluation_uses_and_keeps_the_running_statistics(name, rng):
    module = build(name, dtype=np.float64)
    module.running_mean[...], module.running_var[...] = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    before = module.state_dict()
    x = data(rng, name)
    out = module.eval().forward(x)
    shape = (1, 3) + (1,) * (x.ndim - 2)
    expected = (x - module.running_mean.reshape(shape)) / np.sqrt(module.running_var.reshape(shape) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# Batch renorm always tracks running statistics: r and d are measured against them.
@pytest.mark.parametrize("name", [name for name in BATCHNORMS if not name.startswith("BatchRenorm")])
def test_without_running_statistics_the_buffers_are_none_and_evaluation_uses_the_batch(name, rng):
    module = build(name, track_running_stats=False, dtype=np.float64)
    assert module.running_mean is module.running_var is module.num_batches_tracked is None
    assert list(module.state_dict()) == ["weight", "bias"]
    x = data(rng, name)
    np.testing.assert_array_equal(module.eval().forward(x), module.train().forward(x))


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_restores_weight_bias_and_running_statistics(name, rng):
    module = build(name)
    fresh = build(name).state_dict()
    module.weight.data[...], module.bias.data[...] = 3.0, -2.0
    module.forward(data(rng, name).astype(np.float32))
    module.reset_parameters()
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value, fresh[key])


REPRS = {
    "BatchNorm1d": "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)",
    "BatchNorm2d": "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)",
    "LayerNorm": "LayerNorm((3, 2), eps=1e-05, elementwise_affine=True)",
    "GroupNorm": "GroupNorm(2, 4, eps=1e-05, affine=True)",
    "InstanceNorm2d": "InstanceNorm2d(3, eps=1e-05, affine=True)",
    "BatchRenorm1d": ("BatchRenorm1d(3, eps=1e-05, momentum=0.01, affine=True, schedule=RenormSchedule(rmax=3.0, "
                      "dmax=5.0, warmup_steps=5000, rmax_full_at=40000, dmax_full_at=25000))"),
    "GhostBatchNorm2d": ("GhostBatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True, "
                         "virtual_batch_size=4)"),
    "SyncBatchNorm": "SyncBatchNorm(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True, comm=world())",
}


@pytest.mark.parametrize("name", REPRS)
def test_repr_shows_the_constructor_arguments(name):
    assert repr(build(name)) == REPRS[name]


@pytest.mark.parametrize("name", NAMES)
def test_an_input_that_is_not_an_array_is_a_type_error(name):
    with pytest.raises(TypeError, match="x must be a numpy.ndarray, got list"):
        build(name).forward([[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("name", BATCHNORMS)
def test_a_batchnorm_without_a_channel_axis_says_so(name):
    module = build(name)
    module._expected_ndims = ()  # SyncBatchNorm's own: any (N, C, *)
    with pytest.raises(ValueError, match=rf"{type(module).__name__} expected \(N, C, \*\) input, got 1D input"):
        module.forward(np.zeros(3, np.float32))


def test_layernorm_keeps_torchs_name_for_affine():
    assert nn.LayerNorm(4, elementwise_affine=False).elementwise_affine is False
    assert nn.LayerNorm(np.int64(4)).normalized_shape == (4,)
    assert nn.LayerNorm([2, 3]).normalized_shape == (2, 3)


def test_a_functional_layer_is_what_each_module_computes(rng):
    """The base only routes: GroupNorm's output and gradients are groupnorm_forward/backward's."""
    module = nn.GroupNorm(2, 4, dtype=np.float64)
    module.weight.data[...], module.bias.data[...] = rng.standard_normal(4), rng.standard_normal(4)
    x, dout = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    out, cache = F.groupnorm_forward(x, module.weight.data, module.bias.data, 2)
    np.testing.assert_array_equal(module.forward(x), out)
    dx, dgamma, dbeta = F.groupnorm_backward(dout, cache)
    np.testing.assert_array_equal(module.backward(dout), dx)
    np.testing.assert_array_equal(module.weight.grad, dgamma)
    np.testing.assert_array_equal(module.bias.grad, dbeta)


@pytest.mark.parametrize("cls, extra", [(nn.SyncBatchNorm, ("comm",)),
                                        (nn.GhostBatchNorm1d, ("virtual_batch_size",)),
                                        (nn.GhostBatchNorm2d, ("virtual_batch_size",))])
def test_batch_norm_variants_spell_out_batch_norms_arguments(cls, extra):
    """help() and an editor show the arguments, as for torch's SyncBatchNorm (no bare *args, **kwargs)."""
    import inspect

    params = inspect.signature(cls).parameters
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
    for name in ("num_features", "eps", "momentum", "affine", "track_running_stats", "convention", "dtype", *extra):
        assert name in params
