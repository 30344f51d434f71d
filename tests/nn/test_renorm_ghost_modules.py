"""BatchRenorm1d/2d and GhostBatchNorm1d/2d: PyTorch names, the rmax/dmax schedule driven by
num_batches_tracked (and resumed from a state dict), the reductions to BatchNorm, gradients into .grad."""

import numpy as np
import pytest

from normlab import functional as F
from normlab.nn import (
    BatchNorm1d,
    BatchNorm2d,
    BatchRenorm1d,
    BatchRenorm2d,
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    RenormSchedule,
)


# Bit-for-bit comparisons with batch norm: every layer must do the same arithmetic (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("numpy_backend")


BN_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
# rmax 1 -> 3 over steps 2 -> 6, dmax 0 -> 2 over steps 2 -> 4
SHORT = RenormSchedule(rmax=3.0, dmax=2.0, warmup_steps=2, rmax_full_at=6, dmax_full_at=4)
SHORT_VALUES = [(1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (1.5, 1.0), (2.0, 2.0), (2.5, 2.0), (3.0, 2.0), (3.0, 2.0)]


def _batch(rng, shape, dtype=np.float64):
    return (rng.standard_normal(shape) * 1.5 + 0.3).astype(dtype)


@pytest.mark.parametrize("module", [BatchRenorm2d(3), GhostBatchNorm2d(3, 4)])
def test_state_dict_keys_are_torch_batchnorms(module):
    torch = pytest.importorskip("torch")
    assert list(module.state_dict()) == BN_KEYS == list(torch.nn.BatchNorm2d(3).state_dict())
    torch_state = {k: v.numpy() for k, v in torch.nn.BatchNorm2d(3).state_dict().items()}
    torch_state["running_mean"] = np.array([1.0, 2.0, 3.0], np.float32)
    module.load_state_dict(torch_state)
    np.testing.assert_array_equal(module.running_mean, [1.0, 2.0, 3.0])


def test_schedule_follows_num_batches_tracked_and_drives_the_clipping():
    rng = np.random.default_rng(0)
    m = BatchRenorm1d(2, momentum=0.0, schedule=SHORT, dtype=np.float64)
    # running statistics far from every batch's: r sits at 1/rmax and d at dmax, so the bounds show
    m.running_mean[...] = -1000.0  # d = (mu_B + 1000) / 100, about 10
    m.running_var[...] = 1e4
    for step, (rmax, dmax) in enumerate(SHORT_VALUES):
        assert int(m.num_batches_tracked) == step
        assert m.clipping() == pytest.approx((rmax, dmax), rel=1e-15)
        m(_batch(rng, (8, 2)))
        np.testing.assert_allclose(m._cache.r, 1.0 / rmax, rtol=1e-15)
        np.testing.assert_allclose(m._cache.d, dmax, rtol=1e-15)
    assert int(m.num_batches_tracked) == len(SHORT_VALUES)


def test_schedule_resumes_from_a_state_dict():
    rng = np.random.default_rng(1)
    trained = BatchRenorm2d(3, momentum=0.2, schedule=SHORT, dtype=np.float64)
    for _ in range(3):
        trained(_batch(rng, (4, 3, 2, 2)))
    restored = BatchRenorm2d(3, momentum=0.2, schedule=SHORT, dtype=np.float64)
    assert restored.clipping() != trained.clipping()
    restored.load_state_dict(trained.state_dict())
    assert restored.clipping() == trained.clipping() == SHORT_VALUES[3]
    x = _batch(rng, (4, 3, 2, 2))
    np.testing.assert_array_equal(restored(x), trained(x))
    np.testing.assert_array_equal(restored._cache.r, trained._cache.r)
    np.testing.assert_array_equal(restored.running_var, trained.running_var)
    assert int(restored.num_batches_tracked) == int(trained.num_batches_tracked) == 4


@pytest.mark.parametrize("renorm_cls, bn_cls, shape", [(BatchRenorm1d, BatchNorm1d, (6, 3)),
                                                        (BatchRenorm2d, BatchNorm2d, (4, 3, 2, 2))])
def test_warmup_is_batchnorm_exactly_then_differs(renorm_cls, bn_cls, shape):
    rng = np.random.default_rng(2)
    schedule = RenormSchedule(warmup_steps=3, rmax_full_at=3, dmax_full_at=3)
    renorm, bn = renorm_cls(3, momentum=0.1, schedule=schedule), bn_cls(3, momentum=0.1)
    for _ in range(3):
        x = _batch(rng, shape, np.float32)
        dout = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(renorm(x), bn(x))
        np.testing.assert_array_equal(renorm.backward(dout), bn.backward(dout))
    np.testing.assert_array_equal(renorm.weight.grad, bn.weight.grad)
    np.testing.assert_array_equal(renorm.bias.grad, bn.bias.grad)
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(renorm.state_dict()[key], value)
    x = _batch(rng, shape, np.float32)
    assert np.abs(renorm(x) - bn(x)).max() > 1e-3  # step 3: rmax = 3, dmax = 5, corrections active
    renorm.eval(), bn.eval()
    np.testing.assert_array_equal(renorm(x), bn(x))


def test_renorm_backward_accumulates_the_functional_gradients():
    rng = np.random.default_rng(3)
    m = BatchRenorm2d(3, schedule=RenormSchedule.constant(1.5, 0.5), dtype=np.float64)
    m.running_mean[...] = [0.0, 0.5, -0.5]
    m.running_var[...] = [1.0, 4.0, 0.5]
    m.weight.data[...] = [0.5, 1.0, 2.0]
    rm, rv = m.running_mean.copy(), m.running_var.copy()
    x, dout = _batch(rng, (4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))
    out, cache = F.batchrenorm_forward(x, m.weight.data, m.bias.data, rm, rv, rmax=1.5, dmax=0.5)
    np.testing.assert_array_equal(m(x), out)
    dx, dgamma, dbeta = F.batchrenorm_backward(dout, cache)
    np.testing.assert_array_equal(m.backward(dout), dx)
    m.backward(dout)
    np.testing.assert_allclose(m.weight.grad, 2 * dgamma, rtol=1e-15)
    np.testing.assert_allclose(m.bias.grad, 2 * dbeta, rtol=1e-15)
    np.testing.assert_array_equal(m.running_mean, rm)


def test_renorm_momentum_none_is_a_cumulative_average():
    rng = np.random.default_rng(4)
    m = BatchRenorm1d(2, momentum=None, dtype=np.float64)
    batches = [_batch(rng, (5, 2)) for _ in range(3)]
    for x in batches:
        m(x)
    np.testing.assert_allclose(m.running_mean, np.mean([x.mean(axis=0) for x in batches], axis=0), rtol=1e-13)


@pytest.mark.parametrize("ghost_cls, bn_cls, shape", [(GhostBatchNorm1d, BatchNorm1d, (11, 3)),
                                                      (GhostBatchNorm2d, BatchNorm2d, (7, 3, 2, 2))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_ghost_is_batchnorm_on_the_chunks_one_after_another(ghost_cls, bn_cls, shape, momentum):
    rng = np.random.default_rng(5)
    ghost = ghost_cls(3, virtual_batch_size=3, momentum=momentum, dtype=np.float64)
    bn = bn_cls(3, momentum=momentum, dtype=np.float64)
    for _ in range(2):
        x, dout = _batch(rng, shape), rng.standard_normal(shape)
        out = ghost(x)
        dx = ghost.backward(dout)
        for start in range(0, shape[0], 3):  # chunks of 3, the last one smaller
            chunk = slice(start, start + 3)
            np.testing.assert_allclose(out[chunk], bn(x[chunk]), rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(dx[chunk], bn.backward(dout[chunk]), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ghost.weight.grad, bn.weight.grad, rtol=1e-12)
    np.testing.assert_allclose(ghost.bias.grad, bn.bias.grad, rtol=1e-12)
    np.testing.assert_allclose(ghost.running_mean, bn.running_mean, rtol=1e-13)
    np.testing.assert_allclose(ghost.running_var, bn.running_var, rtol=1e-13)
    assert int(ghost.num_batches_tracked) == int(bn.num_batches_tracked) == 2 * -(-shape[0] // 3)
    x = _batch(rng, shape)
    ghost.eval(), bn.eval()
    np.testing.assert_array_equal(ghost(x), bn(x))


def test_ghost_without_running_statistics_uses_chunk_statistics_in_evaluation():
    rng = np.random.default_rng(6)
    m = GhostBatchNorm1d(3, 4, track_running_stats=False, dtype=np.float64).eval()
    x = _batch(rng, (10, 3))
    np.testing.assert_allclose(m(x), F.ghost_batchnorm_forward(x, np.ones(3), np.zeros(3), virtual_batch_size=4)[0],
                               rtol=1e-15)
    assert m.running_mean is None and "running_mean" not in m.state_dict()


def test_a_rejected_input_leaves_num_batches_tracked_alone():
    m = GhostBatchNorm1d(3, 4)
    with pytest.raises(ValueError, match="leaves a virtual batch of 1 sample"):
        m(np.ones((9, 3), np.float32))
    r = BatchRenorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        r(np.ones((1, 3), np.float32))
    assert int(m.num_batches_tracked) == int(r.num_batches_tracked) == 0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: GhostBatchNorm1d(3, 0), "virtual_batch_size must be a positive integer, got 0"),
        (lambda: GhostBatchNorm2d(3, 2.0), "virtual_batch_size must be a positive integer, got 2.0"),
        (lambda: BatchRenorm1d(3, schedule=RenormSchedule(rmax=0.5)), "rmax must be >= 1"),
        (lambda: BatchRenorm2d(3, schedule=RenormSchedule.constant(2.0, -1.0)), "dmax must be >= 0"),
        (lambda: BatchRenorm1d(0), "num_features must be a positive integer"),
    ],
)
def test_bad_settings_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_schedule_must_be_a_renorm_schedule():
    with pytest.raises(TypeError, match="schedule must be a RenormSchedule or None, got tuple"):
        BatchRenorm1d(3, schedule=(3.0, 5.0))


@pytest.mark.parametrize(
    "module, shape, message",
    [
        (BatchRenorm2d(3), (4, 3), "BatchRenorm2d expected 4D input, got 2D input of shape"),
        (BatchRenorm1d(3), (4, 2), r"BatchRenorm1d\(3\) expected 3 channels in dimension 1"),
        (GhostBatchNorm2d(3, 2), (4, 3, 2), "GhostBatchNorm2d expected 4D input, got 3D"),
        (GhostBatchNorm1d(3, 2), (4, 5), r"GhostBatchNorm1d\(3\) expected 3 channels"),
    ],
)
def test_bad_inputs_are_named(module, shape, message):
    with pytest.raises(ValueError, match=message):
        module(np.ones(shape, np.float32))


def test_repr_shows_the_settings():
    assert "virtual_batch_size=4" in repr(GhostBatchNorm2d(3, 4))
    assert "schedule=RenormSchedule(rmax=3.0, dmax=5.0, warmup_steps=5000" in repr(BatchRenorm2d(3))
