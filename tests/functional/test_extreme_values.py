"""Normalization statistics never overflow: for any finite input of float16, float32 or float64, batch,
layer and group norm give xhat within a few ulps of the exact value (computed in 80-bit long double on
the same data), on both backends; eps must be finite and positive, momentum in [0, 1].

The inputs span the dtype's whole finite range: hypothesis draws the values (with their signs) from
floats(width=16/32/64), so groups mix 1e-40 and 3e38; every group is guaranteed one value away from the
rest, so the variance is not zero and xhat is well defined.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normlab import functional as F
from normlab.kernels.backend import numba_available

BACKENDS = ["numpy", "numba"] if numba_available() else ["numpy"]
WIDTH = {np.float16: 16, np.float32: 32, np.float64: 64}
# xhat's error in units of the dtype's epsilon: the statistics add a few roundings, float16 rounds
# xhat once from float32 statistics.
ULPS = {np.float16: 2, np.float32: 16, np.float64: 16}
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def finite_arrays(dtype, shape):
    elements = st.floats(allow_nan=False, allow_infinity=False, width=WIDTH[dtype])
    return hnp.arrays(dtype, shape, elements=elements)


def _exact_xhat(x, axes, eps):
    """xhat in long double (80-bit on x86: float64 squares cannot overflow), then scaled per group so
    float64 inputs near 1e308 fit too."""
    xl = x.astype(np.longdouble)
    scale = np.max(np.abs(xl), axis=axes, keepdims=True)
    scale[scale == 0] = 1
    xs = xl / scale
    centered = xs - xs.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return centered / np.sqrt(var + eps / (scale * scale))


def _spread(x, axes):
    """Make every group's last value differ from its first, so no group is constant."""
    x = x.copy()
    index_first = tuple(0 if a in axes else slice(None) for a in range(x.ndim))
    index_last = tuple(-1 if a in axes else slice(None) for a in range(x.ndim))
    first = x[index_first]
    big = np.finfo(x.dtype).max
    x[index_last] = np.where(first > 0, -big / 4, big / 4).astype(x.dtype)
    return x


def _check_close(out, x, axes, eps):
    dtype = x.dtype.type
    exact = _exact_xhat(x, axes, eps)
    assert np.isfinite(out).all()
    error = np.max(np.abs(out.astype(np.longdouble) - exact))
    assert error <= ULPS[dtype] * np.finfo(dtype).eps * max(1.0, float(np.max(np.abs(exact)))), error


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data())
def test_batchnorm_xhat_is_exact_for_any_finite_input(dtype, backend, data):
    x = _spread(data.draw(finite_arrays(dtype, (6, 3))), (0,))
    out, cache = F.batchnorm_forward(x, np.ones(3, dtype), np.zeros(3, dtype), backend=backend)
    assert out.dtype == dtype
    _check_close(out, x, (0,), 1e-5)
    dx, _, _ = F.batchnorm_backward(np.ones_like(x), cache)
    assert np.isfinite(dx).all() and dx.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data())
def test_layernorm_xhat_is_exact_for_any_finite_input(dtype, backend, data):
    x = _spread(data.draw(finite_arrays(dtype, (3, 5))), (1,))
    out, _ = F.layernorm_forward(x, np.ones(5, dtype), np.zeros(5, dtype), backend=backend)
    _check_close(out, x, (1,), 1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data())
def test_groupnorm_xhat_is_exact_for_any_finite_input(dtype, backend, data):
    x = data.draw(finite_arrays(dtype, (2, 4, 3)))
    grouped = _spread(x.reshape(2, 2, 6), (2,))
    out, _ = F.groupnorm_forward(grouped.reshape(2, 4, 3), np.ones(4, dtype), np.zeros(4, dtype), 2, backend=backend)
    _check_close(out.reshape(2, 2, 6), grouped, (2,), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, magnitude", [(np.float32, 3e19), (np.float32, 1e38), (np.float64, 1e160),
                                              (np.float64, 1e307), (np.float16, 3e2), (np.float16, 6e4)])
def test_reported_case_huge_values_are_not_zeroed(backend, dtype, magnitude):
    """The reported case: float32 |x| above 2e19 gave all zeros on NumPy (squares overflowed), float16
    above 256 all NaN. Both backends now agree with the exact answer."""
    rng = np.random.default_rng(0)
    x = (rng.uniform(-1, 1, (64, 4)) * magnitude).astype(dtype)
    for forward, axes in (
        (lambda x: F.batchnorm_forward(x, np.ones(4, dtype), np.zeros(4, dtype), backend=backend), (0,)),
        (lambda x: F.layernorm_forward(x, np.ones(4, dtype), np.zeros(4, dtype), backend=backend), (1,)),
    ):
        out, _ = forward(x)
        _check_close(out, x, axes, 1e-5)
        assert np.abs(out).max() > 0.5  # not zeroed


def test_half_precision_uses_float32_statistics():
    """float16 statistics are float32 (as in the frameworks), the output stays float16."""
    x = np.linspace(-60000, 60000, 24, dtype=np.float16).reshape(8, 3)
    out, cache = F.batchnorm_forward(x, np.ones(3, np.float16), np.zeros(3, np.float16))
    assert out.dtype == np.float16 and cache.rstd.dtype == np.float32 and cache.mean.dtype == np.float32
    assert np.isfinite(cache.var).all()  # 1.4e9, beyond float16's 65504


def test_variance_beyond_the_dtype_is_inf_but_xhat_and_rstd_are_exact():
    """float32 data of spread 1e30 has a variance of 1e60: not a float32; var says inf, rstd holds 1e-30."""
    x = np.array([[-1e30], [1e30]], np.float32)
    out, cache = F.batchnorm_forward(x, np.ones(1, np.float32), np.zeros(1, np.float32), backend="numpy")
    np.testing.assert_allclose(out.ravel(), [-1, 1], rtol=1e-6)
    assert np.isinf(cache.var).all()
    np.testing.assert_allclose(cache.rstd.ravel(), [1e-30], rtol=1e-6)


@pytest.mark.parametrize("eps", [np.inf, -np.inf, np.nan, 0.0, -1e-5])
def test_non_finite_or_non_positive_eps_is_rejected(eps):
    x = np.ones((4, 3), np.float32)
    g, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    for call in (lambda: F.batchnorm_forward(x, g, b, eps=eps), lambda: F.layernorm_forward(x, g, b, eps=eps),
                 lambda: F.groupnorm_forward(x, g, b, 3, eps=eps)):
        with pytest.raises(ValueError, match=r"eps must be (finite and )?> 0, got"):
            call()


@pytest.mark.parametrize("momentum", [np.inf, np.nan, -0.1, 1.5])
def test_non_finite_momentum_is_rejected(momentum):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got"):
        F.batchnorm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32),
                            np.ones(3, np.float32), momentum=momentum)


def test_modules_reject_bad_eps_and_momentum_when_built():
    from normlab import nn

    with pytest.raises(ValueError, match="eps must be finite and > 0, got inf"):
        nn.BatchNorm1d(3, eps=float("inf"))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got nan"):
        nn.BatchNorm2d(3, momentum=float("nan"))
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        nn.LayerNorm(3, eps=float("nan"))
    with pytest.raises(ValueError, match="eps must be > 0"):
        nn.GroupNorm(1, 3, eps=-1.0)


@pytest.mark.parametrize("magnitude", [1.0, 1e30, 3e38])
def test_bfloat16_uses_float32_statistics_and_stays_bfloat16(magnitude):
    """bfloat16 (ml_dtypes, as TensorFlow and JAX use it) has float32's range: its float32 statistics can
    overflow too, and are rescued the same way."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    x = (np.random.default_rng(1).uniform(-1, 1, (16, 4)) * magnitude).astype(bf16)
    exact = _exact_xhat(x.astype(np.float64), (0,), 1e-5)
    out, cache = F.batchnorm_forward(x, np.ones(4, bf16), np.zeros(4, bf16))
    assert out.dtype == bf16 and cache.rstd.dtype == np.float32
    assert np.max(np.abs(out.astype(np.float64) - exact)) <= 2 * 2.0**-8 * np.max(np.abs(exact))
    dx, dgamma, _ = F.batchnorm_backward(np.ones_like(x), cache)
    assert dx.dtype == bf16 and dgamma.dtype == bf16 and np.isfinite(dx.astype(np.float32)).all()


def test_half_precision_evaluation_backward_sums_in_float32():
    """Evaluation-mode backward of float16 batch norm: dgamma = sum(dout * xhat) over 4096 samples passes
    65504 on the way (+40 for half the batch, -40 for the other) but ends at 0; summed in float16 it was
    inf. dgamma and dbeta stay float16 and agree with a float32 computation's."""
    n, c = 4096, 8
    rng = np.random.default_rng(0)
    x = np.full((n, c), 40, np.float16)
    dout = np.ones((n, c), np.float16)
    dout[n // 2:] = -1
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float16), np.zeros(c, np.float16)
    stats = (np.zeros(c, np.float16), np.ones(c, np.float16))
    _, cache = F.batchnorm_forward(x, gamma, beta, *stats, training=False, eps=1e-5)
    dx, dgamma, dbeta = F.batchnorm_backward(dout, cache)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == np.float16
    _, cache32 = F.batchnorm_forward(x.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32),
                                     *(s.astype(np.float32) for s in stats), training=False, eps=1e-5)
    dx32, dgamma32, dbeta32 = F.batchnorm_backward(dout.astype(np.float32), cache32)
    assert np.isfinite(dgamma).all()
    np.testing.assert_allclose(dgamma.astype(np.float32), dgamma32, atol=1e-2)
    np.testing.assert_allclose(dbeta.astype(np.float32), dbeta32, atol=1e-2)
    np.testing.assert_allclose(dx.astype(np.float32), dx32, rtol=1e-3)
