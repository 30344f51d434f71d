"""Parity with PyTorch: outputs, every gradient and the running statistics, in float32 and float64, over
shapes and parameters drawn by hypothesis."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import functional as F

torch = pytest.importorskip("torch", reason="PyTorch is the test oracle: pip install 'normlab[test]'")
TF = torch.nn.functional

# float64: ours and torch's agree to rounding. float32: both are held against torch in float64 on the same
# (float32-valued) inputs; ours must be within FLOAT32_ACCURACY of that truth, and its distance to torch's
# float32 result may not exceed torch's own distance from the truth plus the same margin. (For data with a
# large mean, torch's float32 statistics lose bits that ours keep.)
FLOAT64_TOLERANCE = 1e-10
FLOAT32_ACCURACY = 5e-5  # ~400 float32 ulps: room for cancellation in sums of a few terms
SETTINGS = settings(max_examples=40, deadline=None)


def error(a, b, scale=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(a) + np.linalg.norm(b) if scale is None else scale
    return np.linalg.norm(a - b) / max(scale, 1e-300)


def torch_results(torch_fn, inputs, dout, dtype):
    """Run torch_fn on leaf tensors of `inputs` in `dtype`; return [out, *grads] as float64 arrays."""
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    leaves = [torch.tensor(np.asarray(a, np.float64), dtype=tdtype, requires_grad=True) for a in inputs]
    out = torch_fn(*leaves)
    out.backward(torch.tensor(np.asarray(dout, np.float64), dtype=tdtype))
    return [t.detach().numpy().astype(np.float64) for t in [out, *(leaf.grad for leaf in leaves)]]


def assert_matches_torch(ours, torch_fn, inputs, dout, dtype, dx_scale, dgamma_scale=None):
    """ours = [out, dx, dgamma, dbeta]; dx is measured against dx_scale (see the batch norm test), dgamma
    against dgamma_scale when given: the size of the terms its sum adds up, sum |dout * xhat| per channel,
    since with a mean of 1e3 the sum cancels to a small number whose relative rounding error grows
    accordingly (ours and torch's both)."""
    scales = [None, dx_scale, dgamma_scale, None]
    truth = torch_results(torch_fn, inputs, dout, np.float64)
    if dtype == np.float64:
        for name, a, b, scale in zip(("out", "dx", "dgamma", "dbeta"), ours, truth, scales):
            assert error(a, b, scale) <= FLOAT64_TOLERANCE, f"{name}: relative error {error(a, b, scale):.2e}"
        return
    theirs = torch_results(torch_fn, inputs, dout, np.float32)
    for name, a, b, t, scale in zip(("out", "dx", "dgamma", "dbeta"), ours, theirs, truth, scales):
        ours_error, torch_error = error(a, t, scale), error(b, t, scale)
        assert ours_error <= FLOAT32_ACCURACY, f"{name}: {ours_error:.2e} from the float64 result"
        assert error(a, b, scale) <= torch_error + FLOAT32_ACCURACY, f"{name}: {error(a, b, scale):.2e} from torch"


shapes = st.one_of(
    st.tuples(st.integers(2, 9), st.integers(1, 6)),
    st.tuples(st.integers(2, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
)
dtypes = st.sampled_from([np.float32, np.float64])
offsets = st.sampled_from([0.0, 3.0, 1e3])
epsilons = st.sampled_from([1e-5, 1e-3, 0.1])


def draw_input(seed, shape, dtype, offset):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3) + offset).astype(dtype)
    c = shape[1]
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    return rng, x, gamma, beta, dout


@SETTINGS
@given(seed=st.integers(0, 2**31), shape=shapes, dtype=dtypes, offset=offsets, eps=epsilons,
       momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]), training=st.booleans())
def test_batchnorm_matches_torch(seed, shape, dtype, offset, eps, momentum, training):
    rng, x, gamma, beta, dout = draw_input(seed, shape, dtype, offset)
    c = shape[1]
    if np.prod(shape) // c < 2 and training:
        return
    running_mean = (rng.standard_normal(c) + offset).astype(dtype)
    running_var = (rng.random(c) + 0.5).astype(dtype)
    t_mean, t_var = torch.tensor(running_mean, dtype=torch.float64), torch.tensor(running_var, dtype=torch.float64)

    out, cache = F.batchnorm_forward(x, gamma, beta, running_mean, running_var, training=training,
                                     momentum=momentum, eps=eps)
    dx, dgamma, dbeta = F.batchnorm_backward(dout, cache)
    assert out.dtype == dx.dtype == dtype

    def torch_bn(x, gamma, beta):
        mean, var = t_mean.to(x.dtype).clone(), t_var.to(x.dtype).clone()
        out = TF.batch_norm(x, mean, var, gamma, beta, training=training, momentum=momentum, eps=eps)
        torch_bn.running = (mean, var)
        return out

    # dx against its natural scale dout * gamma * rstd: with N = 2, dx itself is nearly zero.
    dx_scale = np.linalg.norm(dout * cache.gamma * cache.rstd)
    assert_matches_torch([out, dx, dgamma, dbeta], torch_bn, [x, gamma, beta], dout, dtype, dx_scale)
    torch_results(torch_bn, [x, gamma, beta], dout, np.float64)
    t_mean64, t_var64 = (t.numpy() for t in torch_bn.running)
    tolerance = FLOAT64_TOLERANCE if dtype == np.float64 else FLOAT32_ACCURACY
    assert error(running_mean, t_mean64) <= tolerance
    assert error(running_var, t_var64) <= tolerance


@SETTINGS
@given(seed=st.integers(0, 2**31), shape=shapes, dtype=dtypes, offset=offsets, momentum=st.sampled_from([0.1, 0.9]))
def test_keras_convention_stores_the_biased_variance(seed, shape, dtype, offset, momentum):
    rng, x, gamma, beta, _ = draw_input(seed, shape, dtype, offset)
    c = shape[1]
    if np.prod(shape) // c < 2:
        return
    running_mean, running_var = np.zeros(c, dtype), np.ones(c, dtype)
    F.batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=momentum, convention="keras")
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    x64 = x.astype(np.float64)
    tolerance = FLOAT64_TOLERANCE if dtype == np.float64 else FLOAT32_ACCURACY
    assert error(running_mean, momentum * x64.mean(axis=axes)) <= tolerance
    assert error(running_var, (1 - momentum) + momentum * x64.var(axis=axes)) <= tolerance


@SETTINGS
@given(seed=st.integers(0, 2**31), shape=shapes, dtype=dtypes, offset=offsets, eps=epsilons,
       elementwise=st.booleans())
def test_layernorm_matches_torch(seed, shape, dtype, offset, eps, elementwise):
    rng, x, _, _, dout = draw_input(seed, shape, dtype, offset)
    if np.prod(shape[1:]) < 2:
        return
    elementwise = elementwise or x.ndim == 2
    param_shape = shape[1:] if elementwise else (shape[1],)
    gamma, beta = rng.standard_normal(param_shape).astype(dtype), rng.standard_normal(param_shape).astype(dtype)
    out, cache = F.layernorm_forward(x, gamma, beta, eps=eps)
    dx, dgamma, dbeta = F.layernorm_backward(dout, cache)

    def torch_ln(x, gamma, beta):
        if elementwise:
            return TF.layer_norm(x, param_shape, gamma, beta, eps=eps)
        return TF.group_norm(x, 1, gamma, beta, eps=eps)  # one group = layer norm with a per-channel affine

    dx_scale = np.linalg.norm(dout * cache.gamma * cache.rstd)
    assert_matches_torch([out, dx, dgamma, dbeta], torch_ln, [x, gamma, beta], dout, dtype, dx_scale)


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3),
       hw=st.tuples(st.integers(1, 4), st.integers(1, 4)), dtype=dtypes, offset=offsets, eps=epsilons)
def test_groupnorm_matches_torch(seed, n, groups, per_group, hw, dtype, offset, eps):
    shape = (n, groups * per_group, *hw)
    if per_group * hw[0] * hw[1] < 2:
        return
    rng, x, gamma, beta, dout = draw_input(seed, shape, dtype, offset)
    out, cache = F.groupnorm_forward(x, gamma, beta, groups, eps=eps)
    dx, dgamma, dbeta = F.groupnorm_backward(dout, cache)
    rstd = np.repeat(cache.rstd.reshape(n, groups), per_group, axis=1).reshape(n, -1, 1, 1)
    dx_scale = np.linalg.norm(dout * gamma.reshape(1, -1, 1, 1) * rstd)
    dgamma_scale = np.linalg.norm(np.abs(dout * cache.xhat.reshape(shape)).sum(axis=(0, 2, 3)))
    assert_matches_torch([out, dx, dgamma, dbeta], lambda x, g, b: TF.group_norm(x, groups, g, b, eps=eps),
                         [x, gamma, beta], dout, dtype, dx_scale, dgamma_scale)


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(1, 3), c=st.integers(1, 4),
       hw=st.tuples(st.integers(1, 4), st.integers(2, 4)), dtype=dtypes, offset=offsets, eps=epsilons)
def test_instancenorm_matches_torch(seed, n, c, hw, dtype, offset, eps):
    rng, x, gamma, beta, dout = draw_input(seed, (n, c, *hw), dtype, offset)
    out, cache = F.instancenorm_forward(x, gamma, beta, eps=eps)
    dx, dgamma, dbeta = F.instancenorm_backward(dout, cache)
    dx_scale = np.linalg.norm(dout * gamma.reshape(1, -1, 1, 1) * cache.rstd.reshape(n, c, 1, 1))
    dgamma_scale = np.linalg.norm(np.abs(dout * cache.xhat.reshape(x.shape)).sum(axis=(0, 2, 3)))
    assert_matches_torch([out, dx, dgamma, dbeta], lambda x, g, b: TF.instance_norm(x, weight=g, bias=b, eps=eps),
                         [x, gamma, beta], dout, dtype, dx_scale, dgamma_scale)
