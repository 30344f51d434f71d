"""Ghost batch normalization: equal to batch norm applied to consecutive chunks by hand (forward, backward,
running statistics), including a smaller last chunk; numerical gradients; PyTorch per chunk."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.functional import (
    batchnorm_backward,
    batchnorm_forward,
    ghost_batchnorm_backward,
    ghost_batchnorm_forward,
    virtual_batch_sizes,
)
from normlab.gradcheck import check_layer

# Bit-for-bit comparisons with batch norm: every layer must do the same arithmetic (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("numpy_backend")


# (input shape, virtual batch size): equal chunks, a smaller last chunk, one sample per chunk with
# spatial positions, a chunk bigger than the batch
CASES = [((12, 3), 4), ((10, 3), 4), ((7, 2, 2, 3), 3), ((5, 2, 2, 2), 1), ((6, 3, 2), 16)]


def _inputs(shape, rng):
    c = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, (1, c) + (1,) * (len(shape) - 2)) + 1.0
    return x, rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 2.0, c)


def _by_hand(x, gamma, beta, rm, rv, dout, virtual_batch_size, momenta, convention):
    """Split the batch, batch-normalize the chunks one after another with the same running statistics,
    concatenate."""
    outs, dxs, dgamma, dbeta, start = [], [], 0.0, 0.0, 0
    for size, momentum in zip(virtual_batch_sizes(len(x), virtual_batch_size), momenta):
        out, cache = batchnorm_forward(x[start : start + size], gamma, beta, rm, rv, momentum=momentum,
                                       convention=convention)
        dx, dg, db = batchnorm_backward(dout[start : start + size], cache)
        outs.append(out)
        dxs.append(dx)
        dgamma, dbeta, start = dgamma + dg, dbeta + db, start + size
    return np.concatenate(outs), np.concatenate(dxs), dgamma, dbeta


@pytest.mark.parametrize("shape, vbs", CASES)
@pytest.mark.parametrize("convention", ["pytorch", "keras"])
def test_equals_splitting_the_batch_by_hand(shape, vbs, convention):
    rng = np.random.default_rng(0)
    x, gamma, beta, rm, rv = _inputs(shape, rng)
    dout = rng.standard_normal(shape)
    rm_hand, rv_hand = rm.copy(), rv.copy()
    momenta = [0.2] * len(virtual_batch_sizes(shape[0], vbs))
    out_hand, dx_hand, dgamma_hand, dbeta_hand = _by_hand(x, gamma, beta, rm_hand, rv_hand, dout, vbs, momenta,
                                                          convention)

    out, cache = ghost_batchnorm_forward(x, gamma, beta, rm, rv, virtual_batch_size=vbs, momentum=0.2,
                                         convention=convention)
    dx, dgamma, dbeta = ghost_batchnorm_backward(dout, cache)
    np.testing.assert_allclose(out, out_hand, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx, dx_hand, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dgamma, dgamma_hand, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dbeta, dbeta_hand, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(rm, rm_hand, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(rv, rv_hand, rtol=1e-13, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 13), vbs=st.integers(2, 15), spatial=st.sampled_from([(), (2,), (1, 3)]),
       seed=st.integers(0, 2**32 - 1))
def test_equals_splitting_by_hand_for_any_batch_and_virtual_batch_size(n, vbs, spatial, seed):
    if n % vbs == 1 and not spatial:
        n += 1  # a last chunk of one sample has one value per channel: rejected, tested below
    rng = np.random.default_rng(seed)
    x, gamma, beta, rm, rv = _inputs((n, 2, *spatial), rng)
    dout = rng.standard_normal(x.shape)
    rm_hand, rv_hand = rm.copy(), rv.copy()
    momenta = [0.1] * len(virtual_batch_sizes(n, vbs))
    expected = _by_hand(x, gamma, beta, rm_hand, rv_hand, dout, vbs, momenta, "pytorch")
    out, cache = ghost_batchnorm_forward(x, gamma, beta, rm, rv, virtual_batch_size=vbs)
    for got, want in zip((out, *ghost_batchnorm_backward(dout, cache), rm, rv), (*expected, rm_hand, rv_hand)):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_chunks_have_their_own_statistics():
    x = np.random.default_rng(1).standard_normal((10, 3)) * 2.0 + 1.0
    out, _ = ghost_batchnorm_forward(x, np.ones(3), np.zeros(3), virtual_batch_size=4)
    for chunk in (slice(0, 4), slice(4, 8), slice(8, 10)):  # 4, 4 and the smaller last chunk of 2
        var = x[chunk].var(axis=0)
        np.testing.assert_allclose(out[chunk].mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(out[chunk].var(axis=0), var / (var + 1e-5), rtol=1e-12)
    whole_batch, _ = batchnorm_forward(x, np.ones(3), np.zeros(3))
    assert np.abs(out - whole_batch).max() > 0.1


def test_per_chunk_momenta_apply_in_order():
    rng = np.random.default_rng(2)
    x, gamma, beta, rm, rv = _inputs((11, 2), rng)
    dout = rng.standard_normal(x.shape)
    momenta = [1.0, 1 / 2, 1 / 3]  # a cumulative average over the chunks of 4, 4 and 3
    rm_hand, rv_hand = rm.copy(), rv.copy()
    _by_hand(x, gamma, beta, rm_hand, rv_hand, dout, 4, momenta, "pytorch")
    ghost_batchnorm_forward(x, gamma, beta, rm, rv, virtual_batch_size=4, momentum=momenta)
    np.testing.assert_allclose(rm, rm_hand, rtol=1e-13)
    np.testing.assert_allclose(rv, rv_hand, rtol=1e-13)
    # with momenta 1, 1/2, 1/3 the running mean is the mean of the three chunk means
    chunk_means = [x[0:4].mean(axis=0), x[4:8].mean(axis=0), x[8:11].mean(axis=0)]
    np.testing.assert_allclose(rm, np.mean(chunk_means, axis=0), rtol=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2)])
@pytest.mark.parametrize("vbs", [6, 7, 100])
def test_a_virtual_batch_as_large_as_the_batch_is_batchnorm(shape, vbs):
    rng = np.random.default_rng(3)
    x, gamma, beta, rm, rv = _inputs(shape, rng)
    rm_bn, rv_bn = rm.copy(), rv.copy()
    out, cache = ghost_batchnorm_forward(x, gamma, beta, rm, rv, virtual_batch_size=vbs)
    out_bn, cache_bn = batchnorm_forward(x, gamma, beta, rm_bn, rv_bn)
    np.testing.assert_allclose(out, out_bn, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(rm, rm_bn, rtol=1e-14)
    np.testing.assert_allclose(rv, rv_bn, rtol=1e-14)
    dout = rng.standard_normal(shape)
    for got, want in zip(ghost_batchnorm_backward(dout, cache), batchnorm_backward(dout, cache_bn)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("shape, vbs", CASES)
def test_gradients_match_numerical_gradients(shape, vbs):
    rng = np.random.default_rng(4)
    x, gamma, beta, _, _ = _inputs(shape, rng)

    def forward(x, gamma, beta):
        return ghost_batchnorm_forward(x, gamma, beta, virtual_batch_size=vbs)

    errors = check_layer(forward, ghost_batchnorm_backward, {"x": x, "gamma": gamma, "beta": beta}, rng=rng)
    assert max(errors.values()) <= 1e-7, errors


def test_matches_torch_batch_norm_per_chunk():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x, gamma, beta, rm, rv = _inputs((11, 3, 2, 2), rng)
    dout = rng.standard_normal(x.shape)
    t_rm, t_rv = torch.tensor(rm), torch.tensor(rv)
    out, cache = ghost_batchnorm_forward(x, gamma, beta, rm, rv, virtual_batch_size=4, momentum=0.1)
    grads = ghost_batchnorm_backward(dout, cache)

    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    tout = torch.cat([torch.nn.functional.batch_norm(chunk, t_rm, t_rv, tg, tb, training=True, momentum=0.1, eps=1e-5)
                      for chunk in torch.split(tx, 4)])
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm, t_rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv, t_rv.numpy(), rtol=1e-12)


@pytest.mark.parametrize("shape", [(9, 3), (2, 3, 2, 2)])
def test_evaluation_is_batchnorm_evaluation(shape):
    rng = np.random.default_rng(6)
    x, gamma, beta, rm, rv = _inputs(shape, rng)
    before = rm.copy()
    out, cache = ghost_batchnorm_forward(x, gamma, beta, rm, rv, virtual_batch_size=1, training=False)
    out_bn, cache_bn = batchnorm_forward(x, gamma, beta, rm, rv, training=False)
    np.testing.assert_array_equal(out, out_bn)
    np.testing.assert_array_equal(rm, before)
    dout = rng.standard_normal(shape)
    for got, want in zip(ghost_batchnorm_backward(dout, cache), batchnorm_backward(dout, cache_bn)):
        np.testing.assert_array_equal(got, want)


def test_float32_preserved():
    rng = np.random.default_rng(7)
    x, gamma, beta, rm, rv = (a.astype(np.float32) for a in _inputs((10, 3, 2, 2), rng))
    out, cache = ghost_batchnorm_forward(x, gamma, beta, rm, rv, virtual_batch_size=4)
    out64, _ = ghost_batchnorm_forward(x.astype(np.float64), gamma, beta, virtual_batch_size=4)
    assert out.dtype == np.float32 and rm.dtype == np.float32
    np.testing.assert_allclose(out, out64, rtol=1e-4, atol=1e-4)
    assert all(g.dtype == np.float32 for g in ghost_batchnorm_backward(np.ones_like(out), cache))


@pytest.mark.parametrize(
    "n, vbs, sizes", [(12, 4, [4, 4, 4]), (10, 4, [4, 4, 2]), (3, 8, [3]), (5, 1, [1] * 5), (9, 4, [4, 4, 1])]
)
def test_virtual_batch_sizes(n, vbs, sizes):
    assert virtual_batch_sizes(n, vbs) == sizes


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((8, 3), {"virtual_batch_size": 0}, "virtual_batch_size must be a positive integer, got 0"),
        ((8, 3), {"virtual_batch_size": 2.5}, "virtual_batch_size must be a positive integer, got 2.5"),
        ((8, 3), {"virtual_batch_size": True}, "virtual_batch_size must be a positive integer"),
        ((8, 3), {"virtual_batch_size": 1}, r"virtual_batch_size=1 leaves a virtual batch of 1 sample\(s\) with 1 "),
        ((9, 3), {"virtual_batch_size": 4}, r"virtual_batch_size=4 leaves a virtual batch of 1 sample"),
        ((8, 3), {"virtual_batch_size": 4, "momentum": [0.1] * 3}, r"one value per virtual batch \(2\), got 3"),
        ((8, 3), {"virtual_batch_size": 4, "momentum": -0.1}, "momentum must be in"),
        ((8, 3), {"virtual_batch_size": 4, "running_var": None}, "must be given together"),
        ((8, 3), {"virtual_batch_size": 4, "running_mean": np.zeros(2)}, r"running_mean must have shape \(3,\)"),
        ((8, 3), {"virtual_batch_size": 4, "training": False, "running_var": None}, "required in evaluation"),
        ((8,), {"virtual_batch_size": 4}, "x must be at least 2-D"),
    ],
)
def test_bad_arguments_are_named(shape, kwargs, message):
    x = np.random.default_rng(8).standard_normal(shape)
    args = {"running_mean": np.zeros(3), "running_var": np.ones(3), **kwargs}
    with pytest.raises(ValueError, match=message):
        ghost_batchnorm_forward(x, np.ones(3), np.zeros(3), **args)


@pytest.mark.parametrize("training", [True, False])
def test_float16_keeps_its_dtype_and_matches_float32(training):
    """Half-precision inputs: out, dx, dgamma and dbeta stay float16 and agree with a float32 computation
    (the chunks' dgamma and dbeta are summed in float32, then rounded once)."""
    rng = np.random.default_rng(12)
    shape, vbs = (10, 3, 2, 2), 4
    x, gamma, beta, rm, rv = (a.astype(np.float16) for a in _inputs(shape, rng))
    dout = rng.standard_normal(shape).astype(np.float16)
    out16, cache16 = ghost_batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), virtual_batch_size=vbs,
                                             training=training)
    dx16, dgamma16, dbeta16 = ghost_batchnorm_backward(dout, cache16)
    wide = [a.astype(np.float32) for a in (x, gamma, beta, rm, rv, dout)]
    out32, cache32 = ghost_batchnorm_forward(*wide[:5], virtual_batch_size=vbs, training=training)
    dx32, dgamma32, dbeta32 = ghost_batchnorm_backward(wide[5], cache32)
    for half, single in [(out16, out32), (dx16, dx32), (dgamma16, dgamma32), (dbeta16, dbeta32)]:
        assert half.dtype == np.float16 and half.shape == single.shape
        np.testing.assert_allclose(half.astype(np.float32), single, rtol=1e-2, atol=2e-2)
