"""conv2d: parity with torch.nn.functional.conv2d (outputs and gradients, float64), the fast im2col path
equal to the direct loop reference, numerical gradients, dtypes and bad-input errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_oracle import assert_close, torch, torch_run

from normlab import functional as F
from normlab.blas import limited_blas_threads
from normlab.gradcheck import check_layer, relative_error

TF = torch.nn.functional


@st.composite
def conv_cases(draw):
    """A valid convolution: shapes, kernel, stride, padding, groups, bias or not."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 2))
    f = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 8))
    w = draw(st.integers(max(1, kw - 2 * pw), 8))
    stride = draw(st.sampled_from([1, 2, 3, (1, 2), (3, 1)]))
    n = draw(st.integers(1, 3))
    return {"x_shape": (n, c, h, w), "w_shape": (f, c // groups, kh, kw), "stride": stride, "padding": (ph, pw),
            "groups": groups, "bias": draw(st.booleans()), "seed": draw(st.integers(0, 2**31))}


def draw_arrays(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    weight = rng.standard_normal(case["w_shape"]).astype(dtype)
    bias = rng.standard_normal(case["w_shape"][0]).astype(dtype) if case["bias"] else None
    return rng, x, weight, bias


def conv_args(case):
    return case["stride"], case["padding"], case["groups"]


@settings(max_examples=60, deadline=None)
@given(case=conv_cases())
def test_conv2d_matches_torch_and_the_loop_reference(case):
    rng, x, weight, bias = draw_arrays(case)
    stride, padding, groups = conv_args(case)
    out, cache = F.conv2d_forward(x, weight, bias, stride, padding, groups)
    dout = rng.standard_normal(out.shape)
    dx, dweight, dbias = F.conv2d_backward(dout, cache)

    t_out, (t_dx, t_dweight, t_dbias) = torch_run(
        lambda x, w, b: TF.conv2d(x, w, b, stride, padding, 1, groups), [x, weight, bias], dout)
    for name, a, b in (("out", out, t_out), ("dx", dx, t_dx), ("dweight", dweight, t_dweight)):
        assert_close(a, b, name)
    if bias is None:
        assert dbias is None
    else:
        assert_close(dbias, t_dbias, "dbias")

    loop_out, loop_cache = F.conv2d_forward_loop(x, weight, bias, stride, padding, groups)
    assert_close(loop_out, out, "loop out", 1e-13)
    for name, a, b in zip(("dx", "dweight", "dbias"), F.conv2d_backward_loop(dout, loop_cache), (dx, dweight, dbias)):
        if b is not None:
            assert_close(a, b, f"loop {name}", 1e-13)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((2, 3, 5, 5), (2, 3, 3, 3), 1, 1),  # F < C, stride 1: dx by the "full" convolution
    ((2, 2, 5, 5), (4, 2, 3, 3), 1, 1),  # F > C, stride 1: dx by col2im
    ((2, 3, 6, 5), (3, 3, 3, 2), 2, (1, 0)),  # strided: col2im with non-overlapping rows
    ((2, 2, 7, 7), (2, 2, 5, 5), 1, 4),  # padding >= kernel: the "full" convolution does not apply
    ((1, 2, 4, 4), (2, 2, 1, 1), 1, 0),  # 1x1
])
def test_conv2d_gradients_match_numerical_gradients(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal(x_shape), "weight": rng.standard_normal(w_shape),
              "bias": rng.standard_normal(w_shape[0])}
    for forward, backward in ((F.conv2d_forward, F.conv2d_backward), (F.conv2d_forward_loop, F.conv2d_backward_loop)):
        def layer(x, weight, bias, forward=forward):
            return forward(x, weight, bias, stride, padding)

        errors = check_layer(layer, backward, {k: v.copy() for k, v in inputs.items()}, rng=rng)
        assert max(errors.values()) < 1e-8, errors


@settings(max_examples=30, deadline=None)
@given(case=conv_cases())
def test_compiled_and_numpy_copies_give_identical_results(case):
    """The numba copies (im2col, col2im, the transposes) move the same numbers as NumPy's, and the products
    are the same products: the results are equal bit for bit."""
    pytest.importorskip("numba")
    rng, x, weight, bias = draw_arrays(case)
    stride, padding, groups = conv_args(case)
    results, dout = [], None
    for backend in ("numpy", "numba"):
        out, cache = F.conv2d_forward(x, weight, bias, stride, padding, groups, backend=backend)
        dout = rng.standard_normal(out.shape) if dout is None else dout
        results.append((out, *F.conv2d_backward(dout, cache)))
    for name, a, b in zip(("out", "dx", "dweight", "dbias"), *results):
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((7, 3, 32, 32), (4, 3, 3, 3), 1, 1),  # 2 images per chunk: 4 chunks over 2 threads, the last one short
    ((25, 2, 9, 9), (3, 2, 3, 3), 2, 1),  # 25x25 positions: 82 images per chunk, fewer than a thread's block
])
def test_results_do_not_depend_on_threads_or_chunks(backend, x_shape, w_shape, stride, padding):
    """Split over 2 threads and chunks of images, or all in one thread: the same convolution (dweight sums
    its blocks in another order, so within rounding)."""
    if backend == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(3)
    x, weight, bias = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    runs = []
    for threads in (1, 2):
        with limited_blas_threads(threads):
            out, cache = F.conv2d_forward(x, weight, bias, stride, padding, backend=backend)
            runs.append((out, *F.conv2d_backward(np.cos(out), cache)))
    loop_out, loop_cache = F.conv2d_forward_loop(x, weight, bias, stride, padding)
    reference = (loop_out, *F.conv2d_backward_loop(np.cos(loop_out), loop_cache))
    for run in runs:
        for name, a, b in zip(("out", "dx", "dweight", "dbias"), run, reference):
            assert_close(a, b, name, 1e-12)


def test_backward_without_input_grad_skips_dx_only():
    rng = np.random.default_rng(1)
    x, weight, bias = rng.standard_normal((3, 2, 6, 6)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    out, cache = F.conv2d_forward(x, weight, bias, 1, 1)
    dout = rng.standard_normal(out.shape)
    dx, dweight, dbias = F.conv2d_backward(dout, cache)
    none, dweight_only, dbias_only = F.conv2d_backward(dout, cache, input_grad=False)
    assert none is None and dx is not None
    assert_close(dweight_only, dweight, "dweight", 1e-14)  # summed image by image without dx: another order
    np.testing.assert_array_equal(dbias_only, dbias)


@pytest.mark.parametrize("stride", [1, 2])
def test_float32_stays_float32_and_is_accurate(stride):
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal((4, 8, 9, 9), dtype=np.float32), rng.standard_normal((6, 8, 3, 3), dtype=np.float32)
    bias = rng.standard_normal(6, dtype=np.float32)
    out, cache = F.conv2d_forward(x, weight, bias, stride, 1)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    grads = F.conv2d_backward(dout, cache)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    out64, cache64 = F.conv2d_forward(x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64), stride, 1)
    assert relative_error(out, out64) < 1e-6
    for g, g64 in zip(grads, F.conv2d_backward(dout.astype(np.float64), cache64)):
        assert relative_error(g, g64) < 1e-6


def test_output_is_contiguous_nchw():
    x, weight = np.ones((2, 3, 5, 5)), np.ones((4, 3, 3, 3))
    out, cache = F.conv2d_forward(x, weight, None, 1, 1)
    dx = F.conv2d_backward(np.ones_like(out), cache)[0]
    assert out.flags.c_contiguous and dx.flags.c_contiguous
    # Every output of an all-ones 3x3 convolution counts the in-bounds inputs it covers: 27 inside, 12 at corners.
    assert out[0, 0, 2, 2] == 27 and out[0, 0, 0, 0] == 12


x4 = np.zeros((2, 3, 5, 5))
w4 = np.zeros((4, 3, 3, 3))


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.conv2d_forward(x4, np.zeros((4, 2, 3, 3))), ValueError,
     r"weight must have shape \(F, C/groups=3, kh, kw\) for input with C=3 channels and groups=1, got weight of shape \(4, 2, 3, 3\)"),
    (lambda: F.conv2d_forward(x4, np.zeros((4, 3, 7, 3))), ValueError,
     r"kernel size \(7, 3\) is larger than the padded input \(5, 5\)"),
    (lambda: F.conv2d_forward(x4, np.zeros((4, 3, 7, 3)), None, 1, 1), None, None),  # padded to 7x7: fine
    (lambda: F.conv2d_forward(x4, w4, None, 1.5), TypeError, r"stride must be an int or a pair of ints, got 1.5"),
    (lambda: F.conv2d_forward(x4, w4, None, 0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: F.conv2d_forward(x4, w4, None, 1, -1), ValueError, r"padding must be >= 0, got -1"),
    (lambda: F.conv2d_forward(x4, w4, None, (1, 1, 1)), TypeError, r"stride must be an int or a pair of ints"),
    (lambda: F.conv2d_forward(x4, w4, None, True), TypeError, r"stride must be an int or a pair of ints, got True"),
    (lambda: F.conv2d_forward(x4, w4, np.zeros(3)), ValueError, r"bias must have shape \(4,\).*got shape \(3,\)"),
    (lambda: F.conv2d_forward(x4, np.zeros((4, 1, 3, 3)), None, 1, 0, 2), ValueError,
     r"groups=2 must divide the input channels C=3"),
    (lambda: F.conv2d_forward(np.zeros((2, 4, 5, 5)), np.zeros((3, 2, 3, 3)), None, 1, 0, 2), ValueError,
     r"groups=2 must divide the filters F=3"),
    (lambda: F.conv2d_forward(x4, w4, None, 1, 0, 0), ValueError, r"groups must be a positive integer, got 0"),
    (lambda: F.conv2d_forward(np.zeros((3, 5, 5)), w4), ValueError, r"x must be 4-D, got 3-D input of shape \(3, 5, 5\)"),
    (lambda: F.conv2d_forward(x4.astype(np.int64), w4), TypeError, r"x must have a floating-point dtype"),
    (lambda: F.conv2d_forward(x4, np.zeros((4, 3, 3))), ValueError, r"weight must be 4-D"),
    (lambda: F.conv2d_backward(np.zeros((2, 4, 5, 5)), F.conv2d_forward(x4, w4)[1]), ValueError,
     r"dout must have shape \(2, 4, 3, 3\)"),
])
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    if error is None:
        call()
        return
    with pytest.raises(error, match=message):
        call()


def test_float16_runs_on_numpy_copies_and_stays_float16():
    """numba compiles float32 and float64 only: other dtypes take the NumPy copies whatever the backend."""
    rng = np.random.default_rng(4)
    x, weight = rng.standard_normal((2, 3, 8, 8)).astype(np.float16), rng.standard_normal((16, 3, 3, 3)).astype(np.float16)
    out, cache = F.conv2d_forward(x, weight, None, 1, 1)
    assert out.dtype == np.float16 and not cache.compiled and not cache.winograd
    dx, dweight, _ = F.conv2d_backward(np.ones_like(out), cache)
    assert dx.dtype == dweight.dtype == np.float16
    reference, _ = F.conv2d_forward_loop(x.astype(np.float64), weight.astype(np.float64), None, 1, 1)
    assert relative_error(out, reference) < 1e-2


def test_caches_deep_copy_so_models_can_be_folded_after_training():
    """The caches name the compiled path with flags, not module objects, which deepcopy cannot copy
    (fold_batchnorm deep-copies the model)."""
    import copy

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 8, 8), dtype=np.float32)
    out, cache = F.conv2d_forward(x, rng.standard_normal((16, 16, 3, 3), dtype=np.float32), None, 1, 1)
    _, pool_cache = F.max_pool2d_forward(out, 2)
    for c in (cache, pool_cache):
        twin = copy.deepcopy(c)
        assert twin.kernels is c.kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_an_unknown_backend_is_named_whatever_the_dtype(dtype):
    x, weight = np.ones((1, 2, 4, 4), dtype), np.ones((3, 2, 3, 3), dtype)
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'numpy', 'numba'\), got 'gpu'"):
        F.conv2d_forward(x, weight, None, 1, 1, backend="gpu")
