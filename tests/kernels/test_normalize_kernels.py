"""The compiled kernels equal the NumPy core: within 1e-6 (float32) and 1e-12 (float64) norm-wise relative
error, on hypothesis-drawn shapes including N = 2, constant groups and means far from zero.

Every comparison runs one layer twice, with backend="numba" and backend="numpy", and compares the
outputs, the statistics in the cache, the (recomputed) xhat and the three gradients. The NumPy reference
always runs in float64, on the same data: where sums cancel (a two-feature layer norm's dx) the float32
NumPy path is itself only about 1e-4 accurate, while the kernels accumulate in float64 and round once.

dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) cancels almost entirely when a group has two elements
(N = 2 batch norm, two-feature layer norm: the output is +-1 whatever x is, so dx ~ eps / var): there
its error is measured against the size of the terms that cancel, rstd * |gamma * dout|, as for any
floating-point result formed by cancellation.
"""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import example, given, settings
from hypothesis import strategies as st

from normlab import functional as F
from normlab.gradcheck import check_layer, relative_error
from normlab.kernels import normalize as K

TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}
SETTINGS = settings(max_examples=40, deadline=None)

dtypes = st.sampled_from([np.float32, np.float64])
offsets = st.sampled_from([0.0, 3.0, -1e3, 1e4])  # 1e4 with scale 1e-2: a mean 1e6 standard deviations out
scales = st.sampled_from([1e-2, 1.0, 50.0])


def _draw_input(shape, dtype, offset, scale, constant, seed, constant_index):
    """x = offset + scale * z; with `constant`, one group (set by `constant_index`) holds a single value."""
    rng = np.random.default_rng(seed)
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    if constant:
        x[constant_index] = dtype(offset + scale)
    dout = rng.standard_normal(shape).astype(dtype)
    return x, dout, rng


def _f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def _assert_close(dtype, **pairs):
    for name, (compiled, reference) in pairs.items():
        assert np.asarray(compiled).dtype == dtype, f"{name}: dtype {np.asarray(compiled).dtype}, not {dtype}"
        error = relative_error(compiled, reference)
        assert error <= TOLERANCE[dtype], f"{name}: relative error {error:.1e} > {TOLERANCE[dtype]:.0e}"


def _assert_close_on_scale(dtype, scale, **pairs):
    """For statistics that may cancel to near zero (a mean): the difference measured against the data's
    scale, since float32 NumPy sums are only that accurate."""
    for name, (compiled, reference) in pairs.items():
        error = np.max(np.abs(compiled.astype(np.float64) - reference)) / scale
        assert error <= TOLERANCE[dtype], f"{name}: error {error:.1e} of the data's scale > {TOLERANCE[dtype]:.0e}"


def _grads_close(dtype, compiled, reference, dx_terms):
    """(dx, dgamma, dbeta) against the reference; dx relative to ||reference|| + ||dx_terms||."""
    (dx, *params), (dx_ref, *params_ref) = compiled, reference
    assert dx.dtype == dtype
    error = np.linalg.norm(dx.astype(np.float64) - dx_ref) / (np.linalg.norm(dx_ref) + np.linalg.norm(dx_terms))
    assert error <= TOLERANCE[dtype], f"dx: relative error {error:.1e} > {TOLERANCE[dtype]:.0e}"
    _assert_close(dtype, dgamma=(params[0], params_ref[0]), dbeta=(params[1], params_ref[1]))


def _dx_terms(dout, cache, shape=None):
    """rstd * |gamma * dout|, the size of the terms dx is formed from (shape: the cache's grouping)."""
    grouped = np.abs(dout).reshape(shape or dout.shape)
    return (grouped * np.abs(cache.gamma) * cache.rstd).reshape(dout.shape)


@st.composite
def batchnorm_shapes(draw):
    n = draw(st.integers(2, 6))
    c = draw(st.integers(1, 5))
    spatial = draw(st.sampled_from([(), (1, 1), (2, 3), (5, 4)]))  # (1, 1) takes the (N, D) path
    return (n, c, *spatial)


@SETTINGS
@given(batchnorm_shapes(), dtypes, offsets, scales, st.booleans(), st.integers(0, 2**32 - 1))
def test_batchnorm_compiled_equals_numpy(shape, dtype, offset, scale, constant, seed):
    x, dout, rng = _draw_input(shape, dtype, offset, scale, constant, seed, (slice(None), 0))
    gamma, beta = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    running = {"numba": (np.zeros(shape[1], dtype), np.ones(shape[1], dtype)),
               "numpy": (np.zeros(shape[1]), np.ones(shape[1]))}
    out, cache = F.batchnorm_forward(x, gamma, beta, *running["numba"], backend="numba")
    ref, ref_cache = F.batchnorm_forward(*_f64(x, gamma, beta), *running["numpy"], backend="numpy")
    assert cache.compiled is not None and ref_cache.compiled is None
    _assert_close(dtype, out=(out, ref), var=(cache.var, ref_cache.var), rstd=(cache.rstd, ref_cache.rstd),
                  xhat=(cache.xhat, ref_cache.xhat), running_var=(running["numba"][1], running["numpy"][1]))
    _assert_close_on_scale(dtype, np.abs(x).max(), mean=(cache.mean, ref_cache.mean),
                           running_mean=(running["numba"][0], running["numpy"][0]))
    _grads_close(dtype, F.batchnorm_backward(dout, cache), F.batchnorm_backward(*_f64(dout), ref_cache),
                 _dx_terms(dout, ref_cache))


@st.composite
def layernorm_cases(draw):
    n = draw(st.integers(1, 5))
    features = draw(st.sampled_from([(1,), (2,), (7,), (3, 2, 2), (2, 1, 5)]))
    per_channel = len(features) > 1 and draw(st.booleans())
    return (n, *features), per_channel


@SETTINGS
@given(layernorm_cases(), dtypes, offsets, scales, st.booleans(), st.integers(0, 2**32 - 1))
@example(case=((5, 1), False), dtype=np.float32, offset=0.0, scale=1e-2, constant=True, seed=3)  # dbeta cancels:
#   sum(dout) = -0.0097 of terms up to 3.3, where float32 partial sums had lost 3.8e-6 of it
def test_layernorm_compiled_equals_numpy(case, dtype, offset, scale, constant, seed):
    shape, per_channel = case
    if shape[1:] == (1,):
        constant = True  # a single feature is always a constant group: the case must not crash
    x, dout, rng = _draw_input(shape, dtype, offset, scale, constant, seed, 0)
    param_shape = (shape[1],) if per_channel else shape[1:]
    gamma, beta = rng.standard_normal(param_shape).astype(dtype), rng.standard_normal(param_shape).astype(dtype)
    out, cache = F.layernorm_forward(x, gamma, beta, backend="numba")
    ref, ref_cache = F.layernorm_forward(*_f64(x, gamma, beta), backend="numpy")
    _assert_close(dtype, out=(out, ref), rstd=(cache.rstd, ref_cache.rstd), xhat=(cache.xhat, ref_cache.xhat))
    _grads_close(dtype, F.layernorm_backward(dout, cache), F.layernorm_backward(*_f64(dout), ref_cache),
                 _dx_terms(dout, ref_cache))


@st.composite
def groupnorm_cases(draw):
    n = draw(st.integers(1, 4))
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (1, 1), (3, 2), (4, 4)]))
    return (n, c, *spatial), groups


@SETTINGS
@given(groupnorm_cases(), dtypes, offsets, scales, st.booleans(), st.integers(0, 2**32 - 1))
def test_groupnorm_compiled_equals_numpy(case, dtype, offset, scale, constant, seed):
    shape, groups = case
    x, dout, rng = _draw_input(shape, dtype, offset, scale, constant, seed, (0, slice(0, shape[1] // groups)))
    gamma, beta = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    out, cache = F.groupnorm_forward(x, gamma, beta, groups, backend="numba")
    ref, ref_cache = F.groupnorm_forward(*_f64(x, gamma, beta), groups, backend="numpy")
    _assert_close(dtype, out=(out, ref), rstd=(cache.rstd, ref_cache.rstd), xhat=(cache.xhat, ref_cache.xhat))
    _grads_close(dtype, F.groupnorm_backward(dout, cache), F.groupnorm_backward(*_f64(dout), ref_cache),
                 _dx_terms(dout, ref_cache, ref_cache.xhat.shape))


@SETTINGS
@given(st.integers(17, 90), st.sampled_from([1, 3, 8, 33, 700]), st.sampled_from([1, 2, 3]),
       st.sampled_from([(1, 1), (2, 3)]), dtypes, offsets, scales, st.booleans(), st.integers(0, 2**32 - 1))
def test_many_rows_equal_numpy(rows, width, groups, spatial, dtype, offset, scale, constant, seed):
    """Enough rows that the forwards run several rows per block, each row's pivot loaded two rows ahead,
    and the backward spreads its dgamma / dbeta partial sums over several blocks: layer norm
    (N, width, *spatial) with its elementwise affine (pipelined rows; 700 * 6 features exceed CHUNK and
    take the chunked path), else group norm (N, groups * width, *spatial), whose rows alternate groups and,
    with 2x3 planes, hold channels of 6 values each."""
    shape = (rows, groups * width, *spatial)
    x, dout, rng = _draw_input(shape, dtype, offset, scale, constant, seed, 0 if groups == 1 else (0, slice(0, width)))
    param_shape = shape[1:] if groups == 1 else shape[1:2]
    gamma, beta = rng.standard_normal(param_shape).astype(dtype), rng.standard_normal(param_shape).astype(dtype)
    if groups == 1:
        forward, backward = F.layernorm_forward, F.layernorm_backward
    else:
        def forward(x, gamma, beta, **kwargs):
            return F.groupnorm_forward(x, gamma, beta, groups, **kwargs)

        backward = F.groupnorm_backward
    out, cache = forward(x, gamma, beta, backend="numba")
    ref, ref_cache = forward(*_f64(x, gamma, beta), backend="numpy")
    _assert_close(dtype, out=(out, ref), rstd=(cache.rstd, ref_cache.rstd), xhat=(cache.xhat, ref_cache.xhat))
    _grads_close(dtype, backward(dout, cache), backward(*_f64(dout), ref_cache),
                 _dx_terms(dout, ref_cache, ref_cache.xhat.shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape",
    [
        (300, 600),  # (N, D): several row blocks and two column tiles, merged
        (2, 3, 5000),  # channel planes longer than a chunk: chunks merged within a plane
        (3, 9000),  # layer norm rows longer than a chunk
    ],
)
def test_blocked_and_chunked_reductions_equal_numpy(shape, dtype):
    rng = np.random.default_rng(1)
    x = (1e3 + rng.standard_normal(shape) * np.linspace(0.1, 10, shape[-1])).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    if len(shape) == 3 or shape[0] == 300:
        forward, backward = F.batchnorm_forward, F.batchnorm_backward
    else:
        forward, backward = F.layernorm_forward, F.layernorm_backward
    out, cache = forward(x, gamma, beta, backend="numba")
    ref, ref_cache = forward(*_f64(x, gamma, beta), backend="numpy")
    _assert_close(dtype, out=(out, ref), rstd=(cache.rstd, ref_cache.rstd))
    _grads_close(dtype, backward(dout, cache), backward(*_f64(dout), ref_cache), _dx_terms(dout, ref_cache))


def test_instancenorm_runs_compiled_and_equals_numpy():
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((3, 4, 5, 5)), rng.standard_normal((3, 4, 5, 5))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    out, cache = F.instancenorm_forward(x, gamma, beta, backend="numba")
    ref, ref_cache = F.instancenorm_forward(x, gamma, beta, backend="numpy")
    assert cache.compiled is not None
    _assert_close(np.float64, out=(out, ref))
    _grads_close(np.float64, F.instancenorm_backward(dout, cache), F.instancenorm_backward(dout, ref_cache),
                 _dx_terms(dout, ref_cache, ref_cache.xhat.shape))


def test_statistics_of_data_far_from_zero_are_exact_in_float64():
    """A mean 1e8 standard deviations from zero: E[x^2] - E[x]^2 would lose every digit; the shifted,
    merged sums keep the variance to rounding."""
    rng = np.random.default_rng(3)
    x = 1e6 + 1e-2 * rng.standard_normal((64, 3, 40))
    _, cache = F.batchnorm_forward(x, np.ones(3), np.zeros(3), backend="numba")
    exact = np.array([np.var(x[:, c].astype(np.longdouble) - np.longdouble(1e6)) for c in range(3)])
    assert relative_error(cache.var.reshape(-1), exact.astype(np.float64)) < 1e-12


@pytest.mark.parametrize("name", ["batchnorm", "layernorm", "groupnorm"])
def test_compiled_gradients_match_numerical_gradients(name):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6, 2, 3)) * 2 + 3
    forwards = {
        "batchnorm": lambda x, gamma, beta: F.batchnorm_forward(x, gamma, beta, backend="numba"),
        "layernorm": lambda x, gamma, beta: F.layernorm_forward(x, gamma, beta, backend="numba"),
        "groupnorm": lambda x, gamma, beta: F.groupnorm_forward(x, gamma, beta, 3, backend="numba"),
    }
    backwards = {"batchnorm": F.batchnorm_backward, "layernorm": F.layernorm_backward,
                 "groupnorm": F.groupnorm_backward}
    inputs = {"x": x, "gamma": rng.standard_normal(6), "beta": rng.standard_normal(6)}
    errors = check_layer(forwards[name], backwards[name], inputs, rng=rng)
    assert max(errors.values()) < 1e-7, errors


def test_non_contiguous_input_and_float16_and_mixed_dtype_dout():
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((6, 10, 4, 4)).astype(np.float32)
    x = wide[:, ::2]  # not contiguous
    gamma, beta = np.ones(5, np.float32), np.zeros(5, np.float32)
    out, cache = F.batchnorm_forward(x, gamma, beta, backend="numba")
    ref, ref_cache = F.batchnorm_forward(x, gamma, beta, backend="numpy")
    assert relative_error(out, ref) < 1e-6
    dout64 = rng.standard_normal(x.shape)  # float64 upstream: NumPy's promotion rules, via the NumPy path
    dx, dx_ref = F.batchnorm_backward(dout64, cache)[0], F.batchnorm_backward(dout64, ref_cache)[0]
    assert dx.dtype == dx_ref.dtype == np.float64
    assert relative_error(dx, dx_ref) < 1e-6
    half = x.astype(np.float16)
    out16, cache16 = F.batchnorm_forward(half, gamma, beta, backend="numba")
    assert cache16.compiled is None and out16.dtype == np.float16  # float16 runs the NumPy core


def test_compiled_cache_keeps_its_fields_and_stays_frozen():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 2, 2))
    _, cache = F.batchnorm_forward(x, np.ones(3), np.zeros(3), backend="numba")
    assert cache.saved_xhat is None  # not computed by the forward
    xhat = cache.xhat
    assert xhat.shape == x.shape and np.array_equal(cache.xhat, xhat)  # recomputed from x, the same
    with pytest.raises(Exception, match="cannot assign"):
        cache.xhat = xhat
    # A cache rebuilt without the compiled statistics runs the NumPy backward on the recomputed xhat.
    rebuilt = dataclasses.replace(cache, saved_xhat=xhat, compiled=None)
    assert rebuilt.xhat is xhat and rebuilt.compiled is None
    dout = rng.standard_normal(x.shape)
    dx = F.batchnorm_backward(dout, rebuilt)[0]  # the NumPy backward on the rebuilt cache
    assert relative_error(dx, F.batchnorm_backward(dout, cache)[0]) < 1e-12


def test_constant_channels_normalize_to_beta():
    x = np.full((4, 3, 2), 7.0)
    out, stats = K.normalize_channels(x, np.ones(3), np.zeros(3), 1e-5)
    assert stats.pivot.shape == stats.shift.shape == stats.var.shape == stats.rstd.shape == (3,)
    np.testing.assert_array_equal(out, np.zeros_like(x))  # constant channels normalize to beta


@st.composite
def small_plane_shapes(draw):
    """(N, C, H, W) whose planes take the blocks-of-images paths: S up to COLUMN_PLANE (elementwise as
    (N, C * S) columns), up to SMALL_PLANE (one image per task), and N large enough for several blocks."""
    plane = draw(st.sampled_from([(1, 2), (4, 4), (7, 7), (5, 13), (10, 20), (16, 16)]))
    n = draw(st.sampled_from([2, 3, 9, 45]))  # 45 planes of 200 or 256: three blocks of images
    return (n, draw(st.integers(1, 4)), *plane)


@settings(max_examples=30, deadline=None)
@given(small_plane_shapes(), dtypes, offsets, scales, st.booleans(), st.integers(0, 2**32 - 1))
def test_small_planes_compiled_equal_numpy(shape, dtype, offset, scale, constant, seed):
    x, dout, rng = _draw_input(shape, dtype, offset, scale, constant, seed, (slice(None), 0))
    gamma, beta = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    out, cache = F.batchnorm_forward(x, gamma, beta, backend="numba")
    ref, ref_cache = F.batchnorm_forward(*_f64(x, gamma, beta), backend="numpy")
    _assert_close(dtype, out=(out, ref), var=(cache.var, ref_cache.var), rstd=(cache.rstd, ref_cache.rstd),
                  xhat=(cache.xhat, ref_cache.xhat))
    _assert_close_on_scale(dtype, np.abs(x).max(), mean=(cache.mean, ref_cache.mean))
    _grads_close(dtype, F.batchnorm_backward(dout, cache), F.batchnorm_backward(*_f64(dout), ref_cache),
                 _dx_terms(dout, ref_cache))


@pytest.mark.parametrize("shape", [(45, 3, 7, 7), (45, 3, 16, 16), (3, 2, 40, 40)])
def test_channel_results_do_not_depend_on_the_thread_count(shape):
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(7)
    x = (1e3 + rng.standard_normal(shape)).astype(np.float32).reshape(shape[0], shape[1], -1)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    saved = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, saved}):
            numba.set_num_threads(threads)
            out, stats = K.normalize_channels(x, gamma, beta, 1e-5)
            results.append((out, *stats, *K.normalize_channels_backward(dout, x, stats, gamma)))
    finally:
        numba.set_num_threads(saved)
    for a, b in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channel_size", [1, 6])  # layer norm's pipelined rows; group norm's channels of 6
def test_row_results_do_not_depend_on_the_thread_count(channel_size):
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(8)
    x = (1e3 + rng.standard_normal((70, 48))).astype(np.float32)  # several rows per block and per partial
    dout = rng.standard_normal(x.shape).astype(np.float32)
    gamma2, beta2 = rng.standard_normal((2, 48 // channel_size)), rng.standard_normal((2, 48 // channel_size))
    saved = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, saved}):
            numba.set_num_threads(threads)
            out, stats = K.normalize_rows(x, gamma2, beta2, channel_size, 1e-5)
            results.append((out, *stats, *K.normalize_rows_backward(dout, x, stats, gamma2, channel_size)))
    finally:
        numba.set_num_threads(saved)
    for a, b in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, b)
