"""Max, average and global average pooling: parity with torch (outputs and gradients, float64), ties
routed as torch routes them, numerical gradients, dtypes and bad-input errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_oracle import assert_close, torch, torch_run

from normlab import functional as F
from normlab.gradcheck import check_layer

TF = torch.nn.functional
POOLS = {
    "max": (F.max_pool2d_forward, F.max_pool2d_backward, TF.max_pool2d),
    "avg": (F.avg_pool2d_forward, F.avg_pool2d_backward, TF.avg_pool2d),
}


@st.composite
def pool_cases(draw):
    kernel = draw(st.sampled_from([1, 2, 3, (2, 3), (3, 1)]))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    # None (= kernel: the tiling path), overlapping and gapped windows.
    stride = draw(st.sampled_from([None, 1, 2, 3, (1, 2), kernel]))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(kh, 9)), draw(st.integers(kw, 9)))
    return shape, kernel, stride, draw(st.integers(0, 2**31))


@settings(max_examples=60, deadline=None)
@given(case=pool_cases(), kind=st.sampled_from(sorted(POOLS)), relu=st.booleans())
def test_pooling_matches_torch(case, kind, relu):
    shape, kernel, stride, seed = case
    forward, backward, torch_pool = POOLS[kind]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if relu:
        x = np.maximum(x, 0)  # windows of zeros: ties, which torch breaks toward the first element
    out, cache = forward(x, kernel, stride)
    dout = rng.standard_normal(out.shape)
    t_out, (t_dx,) = torch_run(lambda x: torch_pool(x, kernel, stride), [x], dout)
    assert_close(out, t_out, "out")
    assert_close(backward(dout, cache), t_dx, "dx")


@pytest.mark.parametrize("kind", sorted(POOLS))
@pytest.mark.parametrize("shape, kernel, stride", [
    ((2, 2, 4, 4), 2, None),  # tiling
    ((2, 2, 5, 7), 2, 2),  # tiling with a cropped remainder
    ((1, 2, 5, 5), 3, 1),  # overlapping
    ((1, 2, 7, 6), (2, 3), (3, 2)),  # gaps between windows
])
def test_pooling_gradients_match_numerical_gradients(kind, shape, kernel, stride):
    forward, backward, _ = POOLS[kind]
    rng = np.random.default_rng(0)
    errors = check_layer(lambda x: forward(x, kernel, stride), backward, {"x": rng.standard_normal(shape)}, rng=rng)
    assert errors["x"] < 1e-8


def test_global_avg_pool_matches_torch_and_numerical_gradients():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 2))
    out, cache = F.global_avg_pool2d_forward(x)
    dout = rng.standard_normal(out.shape)
    t_out, (t_dx,) = torch_run(lambda x: TF.adaptive_avg_pool2d(x, 1).flatten(1), [x], dout)
    assert_close(out, t_out, "out")
    assert_close(F.global_avg_pool2d_backward(dout, cache), t_dx, "dx")
    assert check_layer(F.global_avg_pool2d_forward, F.global_avg_pool2d_backward, {"x": x}, rng=rng)["x"] < 1e-8


@pytest.mark.parametrize("kind", sorted(POOLS))
@pytest.mark.parametrize("stride", [None, 1])
def test_float32_stays_float32(kind, stride):
    forward, backward, _ = POOLS[kind]
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6), dtype=np.float32)
    out, cache = forward(x, 2, stride)
    assert out.dtype == np.float32 and backward(np.ones_like(out), cache).dtype == np.float32
    gout, gcache = F.global_avg_pool2d_forward(x)
    assert gout.dtype == np.float32 and F.global_avg_pool2d_backward(np.ones_like(gout), gcache).dtype == np.float32


def test_max_pool_with_more_than_256_window_offsets_matches_torch():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 19, 18))
    out, cache = F.max_pool2d_forward(x, 17, 1)
    assert cache.argmax.dtype == np.uint16
    dout = rng.standard_normal(out.shape)
    t_out, (t_dx,) = torch_run(lambda x: TF.max_pool2d(x, 17, 1), [x], dout)
    assert_close(out, t_out, "out")
    assert_close(F.max_pool2d_backward(dout, cache), t_dx, "dx")


def test_max_pool_propagates_nan():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    out, _ = F.max_pool2d_forward(x, 2)
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1:, :]).any() and not np.isnan(out[0, 0, :, 1:]).any()


@pytest.mark.parametrize("forward", [F.max_pool2d_forward, F.avg_pool2d_forward])
@pytest.mark.parametrize("args, error, message", [
    (((2, 3, 4, 4), 5), ValueError, r"kernel_size \(5, 5\) is larger than the input's spatial size \(4, 4\)"),
    (((2, 3, 4, 4), 2, 0), ValueError, r"stride must be >= 1, got 0"),
    (((2, 3, 4, 4), 2.0), TypeError, r"kernel_size must be an int or a pair of ints, got 2.0"),
    (((2, 3, 4, 4), (2, 2), (1.5, 1)), TypeError, r"stride must be an int or a pair of ints"),
    (((3, 4, 4), 2), ValueError, r"x must be 4-D, got 3-D input of shape \(3, 4, 4\)"),
])
def test_bad_input_is_rejected_with_a_clear_message(forward, args, error, message):
    shape, *rest = args
    with pytest.raises(error, match=message):
        forward(np.zeros(shape), *rest)


@pytest.mark.parametrize("kind", sorted(POOLS))
def test_backward_rejects_a_wrong_dout_shape(kind):
    forward, backward, _ = POOLS[kind]
    _, cache = forward(np.zeros((2, 3, 4, 4)), 2)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3, 2, 2\)"):
        backward(np.zeros((2, 3, 4, 4)), cache)
