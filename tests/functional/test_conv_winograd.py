"""The Winograd F(2x2, 3x3) convolution: equal to the direct loop reference and to torch (float64, odd and
even map sizes, every padding up to 2, one image or several chunks), its gradients against numerical ones,
float32 accuracy, and when conv2d_forward takes it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_oracle import assert_close, torch, torch_run

from normlab import functional as F
from normlab.functional import conv_winograd as W
from normlab.gradcheck import check_layer, relative_error

pytest.importorskip("numba")
from normlab.kernels import winograd_numba


def forward(x, weight, bias, padding):
    ho, wo = x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2
    return W.winograd_forward(x, weight, bias, padding, (ho, wo), winograd_numba)


def backward(dout, x, weight, padding, input_grad=True):
    return W.winograd_backward(dout, x, weight, padding, winograd_numba, input_grad)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), f=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       ph=st.integers(0, 2), pw=st.integers(0, 2), seed=st.integers(0, 2**31))
def test_winograd_equals_the_loop_reference_and_torch(n, c, f, h, w, ph, pw, seed):
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        return  # no 3x3 window fits
    rng = np.random.default_rng(seed)
    x, weight, bias = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, 3, 3)), rng.standard_normal(f)
    out = forward(x, weight, bias, (ph, pw))
    dout = rng.standard_normal(out.shape)
    dx, dweight = backward(dout, x, weight, (ph, pw))
    loop_out, cache = F.conv2d_forward_loop(x, weight, bias, 1, (ph, pw))
    for name, a, b in zip(("out", "dx", "dweight"), (out, dx, dweight),
                          (loop_out, *F.conv2d_backward_loop(dout, cache))):
        assert_close(a, b, name, 1e-12)
    t_out, (t_dx, t_dweight, _) = torch_run(
        lambda x, w, b: torch.nn.functional.conv2d(x, w, b, 1, (ph, pw)), [x, weight, bias], dout)
    for name, a, b in (("out", out, t_out), ("dx", dx, t_dx), ("dweight", dweight, t_dweight)):
        assert_close(a, b, f"torch {name}", 1e-12)


def test_winograd_without_input_grad_skips_dx_only():
    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal((3, 2, 6, 7)), rng.standard_normal((4, 2, 3, 3))
    dout = rng.standard_normal((3, 4, 6, 7))
    dx, dweight = backward(dout, x, weight, (1, 1))
    none, dweight_only = backward(dout, x, weight, (1, 1), input_grad=False)
    assert none is None and dx is not None
    np.testing.assert_array_equal(dweight_only, dweight)


def test_winograd_gradients_match_numerical_gradients():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 2, 5, 6)), "weight": rng.standard_normal((3, 2, 3, 3)),
              "bias": rng.standard_normal(3)}

    def layer_backward(dout, cache):
        x, weight = cache
        return (*backward(dout, x, weight, (1, 1)), dout.sum(axis=(0, 2, 3)))  # the bias's is conv2d's

    def layer(x, weight, bias):
        return forward(x, weight, bias, (1, 1)), (x, weight)

    errors = check_layer(layer, layer_backward, inputs, rng=rng)
    assert max(errors.values()) < 1e-8, errors


@pytest.mark.parametrize("size", [8, 16])
def test_many_chunks_and_threads_and_float32(size):
    """Chunks of images (16 or 64 tiles per image: 64 or 16 images per chunk) spread over threads, in
    float32: within float32 rounding of the float64 result."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 16, size, size), dtype=np.float32)
    weight = rng.standard_normal((24, 16, 3, 3), dtype=np.float32) * 0.2
    bias = rng.standard_normal(24, dtype=np.float32)
    out, cache = F.conv2d_forward(x, weight, bias, 1, 1)
    assert cache.winograd and out.dtype == np.float32
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    grads = F.conv2d_backward(dout, cache)
    out64, cache64 = F.conv2d_forward(*(a.astype(np.float64) for a in (x, weight, bias)), 1, 1, backend="numpy")
    assert relative_error(out, out64) < 1e-6
    for name, g, g64 in zip(("dx", "dweight", "dbias"), grads, F.conv2d_backward(dout.astype(np.float64), cache64)):
        assert g.dtype == np.float32
        assert relative_error(g, g64) < 1e-5, name


@pytest.mark.parametrize("x_shape, w_shape, stride, groups, backend, expected", [
    ((2, 16, 8, 8), (16, 16, 3, 3), 1, 1, "auto", True),
    ((2, 16, 8, 8), (16, 16, 3, 3), 1, 1, "numpy", False),  # the transforms are compiled only
    ((2, 16, 8, 8), (16, 16, 3, 3), 2, 1, "auto", False),  # strided
    ((2, 16, 8, 8), (16, 8, 3, 3), 1, 2, "auto", False),  # grouped
    ((2, 16, 8, 8), (16, 16, 5, 5), 1, 1, "auto", False),  # not 3x3
    ((2, 1, 8, 8), (32, 1, 3, 3), 1, 1, "auto", False),  # one input channel: the products are too thin
    ((2, 16, 4, 4), (16, 16, 3, 3), 1, 1, "auto", True),  # channels-last tiles: small maps too
    ((2, 16, 3, 3), (16, 16, 3, 3), 1, 1, "auto", False),  # 3x3 output: 4 tiles save next to nothing
])
def test_conv2d_takes_winograd_only_where_it_pays(x_shape, w_shape, stride, groups, backend, expected):
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    out, cache = F.conv2d_forward(x, weight, None, stride, 1, groups, backend=backend)
    assert cache.winograd == expected
    loop_out, _ = F.conv2d_forward_loop(x, weight, None, stride, 1, groups)
    assert_close(out, loop_out, "out", 1e-12)
