"""The compiled pools (`normlab.kernels.pool_numba`) equal the NumPy path, the reference.

Max pooling's outputs and argmax are equal to the bit, ties (windows of zeros after a ReLU) and NaN windows
included; so is average pooling's output (same sums in the same order). The gradients are equal to the bit
where every input element receives at most one window's gradient (stride >= kernel); where windows
overlap the compiled backward adds them in window order and NumPy in kernel-offset order, so they agree
to rounding: 1e-6 (float32) or 1e-12 (float64) relative to the gradient's scale.

Every comparison runs the pools with the blocks of planes split over three threads, whatever the machine.
"""

import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normlab import functional as F
from normlab import parallel
from normlab.functional import pooling
from normlab.kernels import pool_numba

TOLERANCE = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
POOLS = {
    "max": (F.max_pool2d_forward, F.max_pool2d_backward),
    "avg": (F.avg_pool2d_forward, F.avg_pool2d_backward),
}
# (kernel_size, stride): the two compiled with literal sizes (2/2, 3/2) and the general loops with
# overlapping windows, gaps between windows and non-square kernels and strides.
GEOMETRIES = [(2, None), (2, 2), (3, 2), (1, None), (2, 1), (3, 1), (3, None), (2, 3), (4, 3),
              ((2, 3), (1, 2)), ((3, 1), (2, 3)), ((1, 2), None)]


@pytest.fixture
def three_threads(monkeypatch):
    """Every pool split into blocks of planes over three threads, however small."""
    monkeypatch.setattr(pooling, "THREADS_MIN_ELEMENTS", 0)
    monkeypatch.setattr(parallel, "worker_count", lambda: 3)


@st.composite
def pool_inputs(draw):
    """(x, kernel, stride, seed): x of 1-3 images, with ties (ReLU'd) or NaNs drawn in."""
    kernel, stride = draw(st.sampled_from(GEOMETRIES))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(kh, 11)), draw(st.integers(kw, 11)))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if draw(st.booleans()):
        x = np.maximum(x, 0)  # about one window in 2^(kh*kw) is all zeros: a tie broken toward the first
    for _ in range(draw(st.integers(0, 3))):
        x[tuple(rng.integers(0, s) for s in shape)] = np.nan
    return x, kernel, stride, seed


def _overlapping(cache) -> bool:
    return cache.stride[0] < cache.kernel[0] or cache.stride[1] < cache.kernel[1]


def _assert_gradients_agree(compiled, reference, cache, dtype):
    assert compiled.dtype == reference.dtype == dtype
    if not _overlapping(cache):
        np.testing.assert_array_equal(compiled, reference)
        return
    scale = max(np.abs(reference).max(), 1.0)
    np.testing.assert_allclose(compiled, reference, rtol=0, atol=TOLERANCE[np.dtype(dtype)] * scale)


# The fixture's patches are the same for every example, so sharing them across examples is safe.
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=pool_inputs(), kind=st.sampled_from(sorted(POOLS)))
def test_compiled_pools_equal_the_numpy_path(case, kind, three_threads):
    x, kernel, stride, seed = case
    forward, backward = POOLS[kind]
    out, cache = forward(x, kernel, stride, backend="numba")
    ref_out, ref_cache = forward(x, kernel, stride, backend="numpy")
    assert cache.kernels is pool_numba and ref_cache.kernels is None
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, ref_out)  # NaN where NumPy has NaN
    if kind == "max":
        assert cache.argmax.dtype == ref_cache.argmax.dtype
        np.testing.assert_array_equal(cache.argmax, ref_cache.argmax)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(x.dtype)
    _assert_gradients_agree(backward(dout, cache), backward(dout, ref_cache), cache, x.dtype)


# A window's index stays where NumPy's running maximum left it before the first NaN (nothing is greater
# than NaN): 1, 5 / NaN, 7 keeps offset 1 (the 5), NaN, 7 / 3, 4 keeps offset 0 (the NaN itself).
@pytest.mark.parametrize("stride, out, argmax, dx", [
    (2, [[np.nan]], [[1]], [[0, 1, 0], [0, 0, 0], [0, 0, 0]]),  # compiled with literal sizes
    (1, [[np.nan, 7], [np.nan, 7]], [[1, 2], [0, 0]], [[0, 1, 0], [1, 2, 0], [0, 0, 0]]),  # general loops
])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_nan_makes_its_window_nan_and_freezes_its_index(stride, out, argmax, dx, backend):
    x = np.array([[[[1.0, 5.0, 2.0], [np.nan, 7.0, 0.0], [3.0, 4.0, 6.0]]]])
    got, cache = F.max_pool2d_forward(x, 2, stride, backend=backend)
    np.testing.assert_array_equal(got[0, 0], out)
    np.testing.assert_array_equal(cache.argmax[0, 0], argmax)
    np.testing.assert_array_equal(F.max_pool2d_backward(np.ones_like(got), cache)[0, 0], dx)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (2, 1)])
def test_ties_go_to_the_first_maximum(kernel, stride):
    x = np.zeros((1, 2, 5, 5), np.float32)  # every window is a tie
    out, cache = F.max_pool2d_forward(x, kernel, stride, backend="numba")
    assert not out.any() and not cache.argmax.any()
    dx = F.max_pool2d_backward(np.ones_like(out), cache)
    # Each window's gradient lands on its top-left element.
    expected = np.zeros_like(x)
    expected[:, :, : 5 - kernel + 1 : stride, : 5 - kernel + 1 : stride] = 1
    np.testing.assert_array_equal(dx, expected)


def test_more_than_256_window_offsets_use_uint16_indices(three_threads):
    x = np.random.default_rng(5).standard_normal((1, 3, 19, 18))
    out, cache = F.max_pool2d_forward(x, 17, 1, backend="numba")
    ref_out, ref_cache = F.max_pool2d_forward(x, 17, 1, backend="numpy")
    assert cache.argmax.dtype == np.uint16
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(cache.argmax, ref_cache.argmax)


@pytest.mark.parametrize("kind", sorted(POOLS))
def test_non_contiguous_inputs_and_gradients_match(kind, three_threads):
    forward, backward = POOLS[kind]
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 8, 4, 3)).astype(np.float32).transpose(3, 2, 1, 0)  # (3, 4, 8, 9), a view
    out, cache = forward(x, 3, 2, backend="numba")
    ref_out, ref_cache = forward(x, 3, 2, backend="numpy")
    np.testing.assert_array_equal(out, ref_out)
    dout = rng.standard_normal(out.shape[::-1]).astype(np.float32).T
    _assert_gradients_agree(backward(dout, cache), backward(dout, ref_cache), cache, np.float32)


@pytest.mark.parametrize("kind", sorted(POOLS))
def test_a_call_writes_only_its_block_of_planes(kind):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 5, 5)).astype(np.float32)  # 6 planes
    out = np.full((6, 2, 2), -9.0, np.float32)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = np.full(x.shape, -9.0, np.float32)
    if kind == "max":
        argmax = np.full(out.shape, 99, np.uint8)
        pool_numba.max_pool_forward(x, 2, 2, 2, 2, 2, 4, out, argmax)
        assert (argmax[2:4] < 4).all() and (argmax[:2] == 99).all() and (argmax[4:] == 99).all()
        pool_numba.max_pool_backward(dout, argmax, 2, 2, 2, 2, 2, 4, dx)
    else:
        pool_numba.avg_pool_forward(x, 2, 2, 2, 2, 2, 4, out)
        pool_numba.avg_pool_backward(dout, 2, 2, 2, 2, 2, 4, dx)
    assert (out[:2] == -9).all() and (out[4:] == -9).all() and (out[2:4] != -9).all()
    assert (dx[:2] == -9).all() and (dx[4:] == -9).all() and (dx[2:4] != -9).any()
    # Row and column 4 lie outside every 2x2 window: zero gradient, not left as they were.
    assert not dx[2:4, 4, :].any() and not dx[2:4, :, 4].any()


@pytest.mark.parametrize("kind", sorted(POOLS))
def test_the_backward_runs_the_forwards_backend(kind, monkeypatch):
    forward, backward = POOLS[kind]
    calls = []
    compiled_backward = getattr(pool_numba, f"{kind}_pool_backward")
    monkeypatch.setattr(pool_numba, f"{kind}_pool_backward",
                        lambda *args: calls.append(args) or compiled_backward(*args))
    x = np.random.default_rng(8).standard_normal((2, 3, 6, 6)).astype(np.float32)
    out, numpy_cache = forward(x, 2, backend="numpy")
    _, numba_cache = forward(x, 2, backend="numba")
    dout = np.ones_like(out)
    backward(dout, numpy_cache)
    assert calls == []
    np.testing.assert_array_equal(backward(dout, numba_cache), backward(dout, numpy_cache))
    assert len(calls) == 1


@pytest.mark.parametrize("kind", sorted(POOLS))
def test_auto_follows_the_environment_and_other_dtypes_run_numpy(kind, monkeypatch):
    forward, backward = POOLS[kind]
    x = np.random.default_rng(9).standard_normal((2, 3, 4, 4)).astype(np.float32)
    monkeypatch.setenv("NORMLAB_BACKEND", "numpy")
    assert forward(x, 2)[1].kernels is None
    monkeypatch.setenv("NORMLAB_BACKEND", "numba")
    assert forward(x, 2)[1].kernels is pool_numba
    # numba has no float16 arithmetic to speak of: the NumPy path runs, and keeps the dtype.
    out, cache = forward(x.astype(np.float16), 2, backend="numba")
    assert cache.kernels is None and out.dtype == np.float16
    assert backward(np.ones_like(out), cache).dtype == np.float16
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'cuda'"):
        forward(x, 2, backend="cuda")
