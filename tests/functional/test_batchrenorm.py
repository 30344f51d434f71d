"""Batch renormalization: r and d as constants in the backward, clipping, running statistics, the warm-up
schedule, and the reductions to batch norm (rmax = 1, dmax = 0; evaluation)."""

import numpy as np
import pytest

from normlab.functional import (
    RenormSchedule,
    batchnorm_backward,
    batchnorm_forward,
    batchrenorm_backward,
    batchrenorm_forward,
)
from normlab.gradcheck import check_layer, numerical_gradient, relative_error

# Bit-for-bit comparisons with batch norm: every layer must do the same arithmetic (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("numpy_backend")


EPS = 1e-5
SHAPES = [(6, 4), (3, 4, 2, 3)]


def _channel_view(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _inputs(shape, rng, dtype=np.float64):
    """x, gamma, beta and running statistics close enough to the batch's that r and d stay unclipped for
    rmax = dmax = 10, far enough that r != 1 and d != 0."""
    c = shape[1]
    x = (rng.standard_normal(shape) * 2.0 + 0.5).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    running_mean = rng.uniform(-0.5, 1.5, c).astype(dtype)
    running_var = rng.uniform(1.0, 9.0, c).astype(dtype)
    return x, gamma, beta, running_mean, running_var


def _frozen_forward(x, gamma, beta, r, d, eps=EPS):
    """Batch renorm's forward with r and d given, written independently of normlab: the function whose
    gradient the backward must be."""
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    return _channel_view(gamma, x.ndim) * (xhat * r + d) + _channel_view(beta, x.ndim)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmax_1_dmax_0_is_batchnorm_exactly(shape, dtype):
    rng = np.random.default_rng(0)
    x, gamma, beta, rm, rv = _inputs(shape, rng, dtype)
    rm_bn, rv_bn = rm.copy(), rv.copy()
    out, cache = batchrenorm_forward(x, gamma, beta, rm, rv, momentum=0.1, rmax=1.0, dmax=0.0)
    out_bn, cache_bn = batchnorm_forward(x, gamma, beta, rm_bn, rv_bn, momentum=0.1, backend="numpy")  # same arithmetic, bit for bit
    np.testing.assert_array_equal(out, out_bn)
    np.testing.assert_array_equal(rm, rm_bn)
    np.testing.assert_array_equal(rv, rv_bn)
    dout = rng.standard_normal(shape).astype(dtype)
    for got, want in zip(batchrenorm_backward(dout, cache), batchnorm_backward(dout, cache_bn)):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rmax, dmax", [(10.0, 10.0), (1.2, 0.1)])  # unclipped; clipped on some channels
def test_gradients_match_numerical_gradients_with_r_and_d_frozen(shape, rmax, dmax):
    rng = np.random.default_rng(1)
    x, gamma, beta, rm, rv = _inputs(shape, rng)
    out, cache = batchrenorm_forward(x, gamma, beta, rm, rv, rmax=rmax, dmax=dmax)
    r, d = cache.r, cache.d
    assert np.all(np.abs(r - 1) > 1e-3) and np.all(np.abs(d) > 1e-3)  # a real correction, not batch norm
    np.testing.assert_allclose(out, _frozen_forward(x, gamma, beta, r, d), rtol=1e-12, atol=1e-12)

    dout = rng.standard_normal(shape)
    dx, dgamma, dbeta = batchrenorm_backward(dout, cache)
    num_dx = numerical_gradient(lambda v: _frozen_forward(v, gamma, beta, r, d), x.copy(), dout)
    num_dgamma = numerical_gradient(lambda v: _frozen_forward(x, v, beta, r, d), gamma.copy(), dout)
    num_dbeta = numerical_gradient(lambda v: _frozen_forward(x, gamma, v, r, d), beta.copy(), dout)
    assert relative_error(dx, num_dx) <= 1e-7
    assert relative_error(dgamma, num_dgamma) <= 1e-7
    assert relative_error(dbeta, num_dbeta) <= 1e-7


def test_gradients_match_full_forward_when_every_correction_sits_at_a_bound():
    # Clipped r and d do not move under a small change of x, so here the full forward is the frozen one
    # and the numerical gradient of batchrenorm_forward itself must agree.
    rng = np.random.default_rng(2)
    x, gamma, beta, _, _ = _inputs((5, 3, 2, 2), rng)
    rm, rv = np.full(3, -20.0), np.full(3, 100.0)  # d far above dmax, r far below 1/rmax

    def forward(x, gamma, beta):
        return batchrenorm_forward(x, gamma, beta, rm.copy(), rv.copy(), rmax=2.0, dmax=0.5)

    _, cache = forward(x, gamma, beta)
    np.testing.assert_array_equal(cache.r, 0.5)
    np.testing.assert_array_equal(cache.d, 0.5)
    errors = check_layer(forward, batchrenorm_backward, {"x": x, "gamma": gamma, "beta": beta}, rng=rng)
    assert max(errors.values()) <= 1e-7, errors


def test_gradient_ignores_how_r_and_d_move_with_x():
    # Unclipped, the training output is gamma * (x - running_mean) / sigma + beta whatever the batch, so the
    # full derivative is dout * gamma / sigma; the renorm gradient (r, d constant) is a different one.
    rng = np.random.default_rng(3)
    x, gamma, beta, rm, rv = _inputs((6, 3), rng)
    _, cache = batchrenorm_forward(x, gamma, beta, rm.copy(), rv.copy(), rmax=10.0, dmax=10.0)
    dout = rng.standard_normal(x.shape)
    dx = batchrenorm_backward(dout, cache)[0]
    full = numerical_gradient(
        lambda v: batchrenorm_forward(v, gamma, beta, rm.copy(), rv.copy(), rmax=10.0, dmax=10.0)[0], x.copy(), dout
    )
    assert relative_error(full, dout * gamma / np.sqrt(rv + EPS)) <= 1e-7
    assert relative_error(dx, full) > 1e-2


@pytest.mark.parametrize("shape", SHAPES)
def test_unclipped_training_output_is_the_evaluation_output(shape):
    rng = np.random.default_rng(4)
    x, gamma, beta, rm, rv = _inputs(shape, rng)
    out_eval, _ = batchrenorm_forward(x, gamma, beta, rm, rv, training=False)
    out_train, _ = batchrenorm_forward(x, gamma, beta, rm, rv, rmax=10.0, dmax=10.0)
    np.testing.assert_allclose(out_train, out_eval, rtol=1e-12, atol=1e-12)


def test_clipping_engages_at_the_bounds():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 5))
    x -= x.mean(axis=0)
    x /= x.std(axis=0)  # batch mean 0 and variance 1 per channel
    gamma, beta = rng.uniform(0.5, 1.5, 5), rng.standard_normal(5)
    # per channel: r above rmax, r below 1/rmax, d above dmax, d below -dmax, nothing clipped
    rm = np.array([0.0, 0.0, -3.0, 3.0, 0.25])
    rv = np.array([0.01, 100.0, 1.0, 1.0, 1.21]) - EPS
    out, cache = batchrenorm_forward(x, gamma, beta, rm.copy(), rv.copy(), rmax=2.0, dmax=1.0)
    sigma_b = np.sqrt(x.var(axis=0) + EPS)
    np.testing.assert_allclose(cache.r.ravel(), [2.0, 0.5, sigma_b[2], sigma_b[3], sigma_b[4] / 1.1], rtol=1e-12)
    np.testing.assert_allclose(cache.d.ravel(), [0.0, 0.0, 1.0, -1.0, -0.25 / 1.1], atol=1e-12)
    assert cache.r[0, 0] == 2.0 and cache.r[0, 1] == 0.5 and cache.d[0, 2] == 1.0 and cache.d[0, 3] == -1.0
    np.testing.assert_allclose(out, _frozen_forward(x, gamma, beta, cache.r, cache.d), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("convention", ["pytorch", "keras"])
def test_running_statistics_move_as_batchnorm_moves_them_after_r_and_d(convention):
    rng = np.random.default_rng(6)
    x, gamma, beta, rm, rv = _inputs((4, 3, 2, 2), rng)
    before_mean, before_var = rm.copy(), rv.copy()
    rm_bn, rv_bn = rm.copy(), rv.copy()
    _, cache = batchrenorm_forward(x, gamma, beta, rm, rv, momentum=0.3, convention=convention, rmax=10, dmax=10)
    batchnorm_forward(x, gamma, beta, rm_bn, rv_bn, momentum=0.3, convention=convention)
    np.testing.assert_array_equal(rm, rm_bn)
    np.testing.assert_array_equal(rv, rv_bn)
    assert not np.allclose(rm, before_mean)
    # r and d were measured against the statistics before the update
    batch_mean, batch_var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    sigma = np.sqrt(before_var + EPS)
    np.testing.assert_allclose(cache.r.ravel(), np.sqrt(batch_var + EPS) / sigma, rtol=1e-12)
    np.testing.assert_allclose(cache.d.ravel(), (batch_mean - before_mean) / sigma, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_evaluation_is_batchnorm_evaluation(shape):
    rng = np.random.default_rng(7)
    x, gamma, beta, rm, rv = _inputs(shape, rng)
    before = rm.copy(), rv.copy()
    out, cache = batchrenorm_forward(x, gamma, beta, rm, rv, training=False, rmax=1.5, dmax=0.5)
    out_bn, cache_bn = batchnorm_forward(x, gamma, beta, rm, rv, training=False)
    np.testing.assert_array_equal(out, out_bn)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])
    dout = rng.standard_normal(shape)
    for got, want in zip(batchrenorm_backward(dout, cache), batchnorm_backward(dout, cache_bn)):
        np.testing.assert_array_equal(got, want)


def test_float32_preserved_and_close_to_float64():
    rng = np.random.default_rng(8)
    args64 = _inputs((16, 4, 3, 3), rng)
    args32 = [a.astype(np.float32) for a in args64]
    out32, cache32 = batchrenorm_forward(*args32, rmax=1.5, dmax=0.5)
    out64, cache64 = batchrenorm_forward(*args64, rmax=1.5, dmax=0.5)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    dout = rng.standard_normal(out64.shape)
    for g32, g64 in zip(batchrenorm_backward(dout.astype(np.float32), cache32), batchrenorm_backward(dout, cache64)):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-3)


def test_matches_torch_autograd_with_detached_corrections():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x, gamma, beta, rm, rv = _inputs((5, 3, 2, 2), rng)
    rmax, dmax = 1.3, 0.2
    out, cache = batchrenorm_forward(x, gamma, beta, rm.copy(), rv.copy(), rmax=rmax, dmax=dmax)
    dout = rng.standard_normal(x.shape)
    grads = batchrenorm_backward(dout, cache)

    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    mean = tx.mean(dim=(0, 2, 3), keepdim=True)
    var = tx.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    sigma_b = torch.sqrt(var + EPS)
    sigma = torch.sqrt(torch.tensor(rv).view(1, -1, 1, 1) + EPS)
    r = torch.clamp(sigma_b / sigma, 1 / rmax, rmax).detach()
    d = torch.clamp((mean - torch.tensor(rm).view(1, -1, 1, 1)) / sigma, -dmax, dmax).detach()
    tout = tg.view(1, -1, 1, 1) * ((tx - mean) / sigma_b * r + d) + tb.view(1, -1, 1, 1)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


def test_matches_keras_renorm_on_one_step():
    # Keras keeps its own renorm statistics (a moving mean and a moving stddev); start them where ours are
    # (stddev = sqrt(running_var + eps)) and one training step must agree, forward and gradients.
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the comparison takes gradients with tf.GradientTape")
    import tensorflow as tf

    rng = np.random.default_rng(10)
    x, gamma, beta, rm, rv = _inputs((6, 3, 2, 2), rng)
    eps, rmax, dmax = 1e-3, 1.2, 0.2
    out, cache = batchrenorm_forward(x, gamma, beta, rm.copy(), rv.copy(), eps=eps, rmax=rmax, dmax=dmax)
    assert np.any(cache.r == 1 / rmax) and np.any(np.abs(cache.d) == dmax)  # the clipping is part of the check
    dout = rng.standard_normal(x.shape)
    grads = batchrenorm_backward(dout, cache)

    layer = keras.layers.BatchNormalization(axis=1, epsilon=eps, renorm=True, dtype="float64",
                                            renorm_clipping={"rmax": rmax, "rmin": 1 / rmax, "dmax": dmax})
    layer.build(x.shape)
    for variable, value in [(layer.gamma, gamma), (layer.beta, beta), (layer.renorm_mean, rm),
                            (layer.renorm_stddev, np.sqrt(rv + eps))]:
        variable.assign(value)
    tx = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tx)
        kout = layer(tx, training=True)
    kgrads = tape.gradient(kout, [tx, layer.gamma, layer.beta], output_gradients=tf.constant(dout))
    np.testing.assert_allclose(out, kout.numpy(), rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, kgrads):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rmax": 0.5}, "rmax must be >= 1"),
        ({"dmax": -0.1}, "dmax must be >= 0"),
        ({"momentum": 1.5}, "momentum must be in"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"running_mean": None}, "running_mean and running_var are required by batch renorm"),
        ({"running_var": np.ones(4)}, r"running_var must have shape \(3,\)"),
        ({"gamma": np.ones(2)}, r"gamma must have shape \(3,\)"),
        ({"x": np.ones((1, 3))}, "more than 1 value per channel"),
        ({"x": np.ones(3)}, "x must be at least 2-D"),
        ({"convention": "caffe"}, "convention must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"x": np.ones((4, 3)), "gamma": np.ones(3), "beta": np.zeros(3),
            "running_mean": np.zeros(3), "running_var": np.ones(3)}
    args.update(kwargs)
    x, gamma, beta, rm, rv = (args.pop(k) for k in ("x", "gamma", "beta", "running_mean", "running_var"))
    with pytest.raises(ValueError, match=message):
        batchrenorm_forward(x, gamma, beta, rm, rv, **args)


def test_backward_rejects_a_dout_of_the_wrong_shape():
    _, cache = batchrenorm_forward(np.ones((4, 3)) + np.arange(4)[:, None], np.ones(3), np.zeros(3),
                                   np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"dout must have shape \(4, 3\)"):
        batchrenorm_backward(np.ones((4, 2)), cache)


# -- the warm-up schedule ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "step, rmax, dmax",
    [
        (0, 1.0, 0.0),
        (4999, 1.0, 0.0),
        (5000, 1.0, 0.0),
        (12_000, 1.4, 1.75),  # 7000 of 35000 and of 20000 ramp steps
        (22_500, 2.0, 4.375),
        (25_000, 1 + 2 * 20 / 35, 5.0),
        (40_000, 3.0, 5.0),
        (10**7, 3.0, 5.0),
    ],
)
def test_default_schedule_is_ioffes(step, rmax, dmax):
    got = RenormSchedule()(step)
    assert got == pytest.approx((rmax, dmax), rel=1e-15, abs=0)


def test_constant_schedule_clips_from_step_zero():
    assert RenormSchedule.constant(2.5, 0.5)(0) == (2.5, 0.5)
    assert RenormSchedule.constant(2.5, 0.5)(123) == (2.5, 0.5)


def test_schedule_without_a_ramp_jumps_at_the_end_of_warmup():
    schedule = RenormSchedule(rmax=2.0, dmax=1.0, warmup_steps=10, rmax_full_at=10, dmax_full_at=10)
    assert [schedule(t) for t in (0, 9, 10, 11)] == [(1.0, 0.0), (1.0, 0.0), (2.0, 1.0), (2.0, 1.0)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rmax": 0.9}, "rmax must be >= 1"),
        ({"dmax": -1.0}, "dmax must be >= 0"),
        ({"warmup_steps": -1}, "warmup_steps must be a non-negative integer"),
        ({"warmup_steps": 100, "dmax_full_at": 50}, "dmax_full_at must be >= warmup_steps=100"),
        ({"rmax_full_at": 2.5}, "rmax_full_at must be a non-negative integer"),
    ],
)
def test_schedule_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RenormSchedule(**kwargs)


def test_schedule_rejects_a_negative_step():
    with pytest.raises(ValueError, match="step must be a non-negative integer, got -1"):
        RenormSchedule()(-1)


@pytest.mark.parametrize("training", [True, False])
def test_float16_keeps_its_dtype_and_matches_float32(training):
    """Half-precision inputs: out, dx, dgamma and dbeta stay float16 (normalize's statistics are float32,
    and r, d with them; out and the sums were returned in float32) and agree with a float32 computation."""
    rng = np.random.default_rng(11)
    shape = (16, 3, 2, 2)
    x, gamma, beta, rm, rv = _inputs(shape, rng, np.float16)
    dout = rng.standard_normal(shape).astype(np.float16)
    out16, cache16 = batchrenorm_forward(x, gamma, beta, rm.copy(), rv.copy(), training=training, rmax=10,
                                         dmax=10, eps=EPS)
    dx16, dgamma16, dbeta16 = batchrenorm_backward(dout, cache16)
    wide = [a.astype(np.float32) for a in (x, gamma, beta, rm, rv, dout)]
    out32, cache32 = batchrenorm_forward(*wide[:5], training=training, rmax=10, dmax=10, eps=EPS)
    dx32, dgamma32, dbeta32 = batchrenorm_backward(wide[5], cache32)
    for half, single in [(out16, out32), (dx16, dx32), (dgamma16, dgamma32), (dbeta16, dbeta32)]:
        assert half.dtype == np.float16 and half.shape == single.shape
        np.testing.assert_allclose(half.astype(np.float32), single, rtol=1e-2, atol=2e-2)
