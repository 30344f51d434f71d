"""The channels-last im2row convolution: equal to the direct loop reference and to torch (float64, every
kernel size, stride and padding drawn), its gradients against numerical ones, float32 accuracy over chunks
and threads, and when conv2d_forward takes it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_oracle import assert_close, torch, torch_run

from normlab import functional as F
from normlab.blas import limited_blas_threads
from normlab.functional import conv_channels_last as CL
from normlab.gradcheck import check_layer, relative_error

pytest.importorskip("numba")


def forward(x, weight, bias, stride, padding):
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    out_size = ((h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1)
    return CL.channels_last_forward(x, weight, bias, stride, padding, out_size)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), f=st.integers(1, 4), kh=st.integers(1, 4), kw=st.integers(1, 4),
       h=st.integers(1, 8), w=st.integers(1, 8), ph=st.integers(0, 2), pw=st.integers(0, 2),
       sh=st.integers(1, 3), sw=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_im2row_equals_the_loop_reference_and_torch(n, c, f, kh, kw, h, w, ph, pw, sh, sw, seed):
    if h + 2 * ph < kh or w + 2 * pw < kw:
        return  # no window fits
    rng = np.random.default_rng(seed)
    x, weight, bias = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, kh, kw)), rng.standard_normal(f)
    out = forward(x, weight, bias, (sh, sw), (ph, pw))
    dout = rng.standard_normal(out.shape)
    dx, dweight = CL.channels_last_backward(dout, x, weight, (sh, sw), (ph, pw), input_grad=True)
    loop_out, cache = F.conv2d_forward_loop(x, weight, bias, (sh, sw), (ph, pw))
    for name, a, b in zip(("out", "dx", "dweight"), (out, dx, dweight),
                          (loop_out, *F.conv2d_backward_loop(dout, cache))):
        assert_close(a, b, name, 1e-12)
    t_out, (t_dx, t_dweight, _) = torch_run(
        lambda x, w, b: torch.nn.functional.conv2d(x, w, b, (sh, sw), (ph, pw)), [x, weight, bias], dout)
    for name, a, b in (("out", out, t_out), ("dx", dx, t_dx), ("dweight", dweight, t_dweight)):
        assert_close(a, b, f"torch {name}", 1e-12)


def test_im2row_gradients_match_numerical_gradients():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3, 5, 6)), "weight": rng.standard_normal((4, 3, 3, 2)),
              "bias": rng.standard_normal(4)}

    def layer(x, weight, bias):
        return forward(x, weight, bias, (2, 1), (1, 1)), (x, weight)

    def backward(dout, cache):
        x, weight = cache
        dx, dweight = CL.channels_last_backward(dout, x, weight, (2, 1), (1, 1), input_grad=True)
        return dx, dweight, dout.sum(axis=(0, 2, 3))  # the bias's gradient is conv2d_backward's

    errors = check_layer(layer, backward, inputs, rng=rng)
    assert max(errors.values()) < 1e-8, errors


def test_without_input_grad_skips_dx_only():
    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal((3, 2, 6, 7)), rng.standard_normal((4, 2, 3, 3))
    dout = rng.standard_normal((3, 4, 3, 4))
    dx, dweight = CL.channels_last_backward(dout, x, weight, (2, 2), (1, 1), input_grad=True)
    none, dweight_only = CL.channels_last_backward(dout, x, weight, (2, 2), (1, 1), input_grad=False)
    assert none is None and dx is not None
    np.testing.assert_array_equal(dweight_only, dweight)


@pytest.mark.parametrize("stride, kernel", [(2, 3), (1, 2), (1, 5)])
def test_many_chunks_and_threads_and_float32(stride, kernel):
    """Chunks of images (at most 64 positions per image: 16 or more images per chunk) spread over one or
    two threads, in float32: within float32 rounding of the float64 result, for either thread count."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 16, 8 * stride, 8 * stride), dtype=np.float32)
    weight = rng.standard_normal((24, 16, kernel, kernel), dtype=np.float32) * 0.2
    bias = rng.standard_normal(24, dtype=np.float32)
    padding = (kernel - 1) // 2  # outputs of 8x8 or 7x7
    out64, cache64 = F.conv2d_forward(*(a.astype(np.float64) for a in (x, weight, bias)), stride, padding,
                                      backend="numpy")
    dout = rng.standard_normal(out64.shape, dtype=np.float32)
    grads64 = F.conv2d_backward(dout.astype(np.float64), cache64)
    for threads in (1, 2):
        with limited_blas_threads(threads):
            out, cache = F.conv2d_forward(x, weight, bias, stride, padding)
            grads = F.conv2d_backward(dout, cache)
        assert cache.channels_last and not cache.winograd and out.dtype == np.float32
        assert relative_error(out, out64) < 1e-6
        for name, g, g64 in zip(("dx", "dweight", "dbias"), grads, grads64):
            assert g.dtype == np.float32
            assert relative_error(g, g64) < 1e-5, name


@pytest.mark.parametrize("x_shape, w_shape, stride, groups, backend, expected", [
    ((2, 16, 8, 8), (32, 16, 3, 3), 2, 1, "auto", (False, True)),  # strided, 16 channels on a small map: im2row
    ((2, 16, 7, 7), (32, 16, 2, 2), 1, 1, "auto", (False, True)),  # 2x2 filters
    ((2, 16, 8, 8), (32, 16, 1, 1), 2, 1, "auto", (False, False)),  # 1x1: im2col is a plain subsampling copy
    ((2, 16, 8, 8), (32, 16, 3, 3), 2, 1, "numpy", (False, False)),  # the copies are compiled only
    ((2, 16, 8, 8), (16, 16, 3, 3), 1, 1, "auto", (True, False)),  # 3x3 stride 1: Winograd's
    ((2, 16, 8, 8), (32, 8, 3, 3), 2, 2, "auto", (False, False)),  # grouped
    ((2, 8, 8, 8), (32, 8, 3, 3), 2, 1, "auto", (False, False)),  # too few input channels: short runs again
    ((2, 16, 20, 20), (32, 16, 3, 3), 2, 1, "auto", (False, False)),  # 10x10 output: im2col's runs are long enough
])
def test_conv2d_goes_channels_last_where_it_pays(x_shape, w_shape, stride, groups, backend, expected):
    """(winograd, channels_last) as the cache records them, and the same result as the loop reference."""
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    out, cache = F.conv2d_forward(x, weight, None, stride, w_shape[2] // 2, groups, backend=backend)
    assert (cache.winograd, cache.channels_last) == expected
    loop_out, _ = F.conv2d_forward_loop(x, weight, None, stride, w_shape[2] // 2, groups)
    assert_close(out, loop_out, "out", 1e-12)
