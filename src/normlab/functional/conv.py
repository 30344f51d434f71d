"""2-D convolution (cross-correlation, as in every deep learning library) over NCHW arrays.

Two implementations with one contract:

- `conv2d_forward` / `conv2d_backward`: the fast path. im2col lays every receptive field out as a column
  of a (C*kh*kw, N*Ho*Wo) matrix, built from `sliding_window_view` (a view) with a single copy, so the
  convolution is ONE matrix product with the (F, C*kh*kw) filter matrix, in the input's dtype (float32
  stays float32; NumPy's BLAS is multithreaded). The memory order (C*kh*kw, N*Ho*Wo) keeps W innermost
  on both sides of the copy. With dout2 = dout as (F, N*Ho*Wo), the backward is

      dW = dout2 @ cols.T                                   one product with the cached cols
      dx = col2im(W2.T @ dout2)                             strided convolutions
      dx = conv(dout, W flipped and transposed, pad k-1-p)  stride 1, F <= C: an im2col and a product again

  col2im adds the kh*kw kernel offsets' slices of the column matrix onto the input one offset at a time
  (strided slices of whole arrays, not np.add.at). For stride 1 the "full" convolution computes the same
  sums without writing and re-reading the kh*kw times larger dcols matrix.
- `conv2d_forward_loop` / `conv2d_backward_loop`: the direct definition, a Python loop over output
  positions. Slow; kept as the reference the tests hold the fast path to.

Grouped convolution (groups > 1) splits the channels into `groups` independent convolutions; the fast
path then does one batched product over the groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.functional._checks import check_float_array, check_param, check_same_shape
from normlab.functional._windows import Pair, as_pair, fold_windows, output_size, pad_spatial, sliding_windows


@dataclass(frozen=True)
class Conv2dCache:
    """What the backward needs. `cols` is None when the forward was asked not to keep it (or for the loop
    reference); the fast backward then rebuilds it from `x`."""

    x: np.ndarray  # (N, C, H, W): the input
    weight: np.ndarray  # (F, C // groups, kh, kw), in x's dtype
    has_bias: bool
    stride: Pair
    padding: Pair
    groups: int
    cols: np.ndarray | None  # (C*kh*kw, N*Ho*Wo)


def conv2d_geometry(x, weight, bias, stride, padding, groups) -> tuple[np.ndarray, np.ndarray, Pair, Pair, Pair]:
    """Check a convolution's arguments. Returns (x, weight in x's dtype, stride, padding, (Ho, Wo))."""
    x = check_float_array("x", x, ndims=(4,))
    weight = check_float_array("weight", weight, ndims=(4,))
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    c, h, w = x.shape[1:]
    f, cg, kh, kw = weight.shape
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={c} of x with shape {x.shape}")
    if f % groups:
        raise ValueError(f"groups={groups} must divide the filters F={f} of weight with shape {weight.shape}")
    if cg != c // groups:
        raise ValueError(
            f"weight must have shape (F, C/groups={c // groups}, kh, kw) for input with C={c} channels "
            f"and groups={groups}, got weight of shape {weight.shape}"
        )
    if bias is not None:
        check_param("bias", bias, (f,), x.dtype)
    stride = as_pair("stride", stride, minimum=1)
    padding = as_pair("padding", padding, minimum=0)
    padded = (h + 2 * padding[0], w + 2 * padding[1])
    if kh > padded[0] or kw > padded[1]:
        raise ValueError(
            f"kernel size ({kh}, {kw}) is larger than the padded input {padded} "
            f"(input {(h, w)}, padding {padding})"
        )
    return x, weight.astype(x.dtype, copy=False), stride, padding, output_size(padded, (kh, kw), stride)


def im2col(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair) -> np.ndarray:
    """Every receptive field of x as a column.

    Inputs:
    - x: (N, C, H, W).

    Returns cols of shape (C*kh*kw, N*Ho*Wo): row (c, i, j) holds input channel c at kernel offset (i, j)
    for every output position (n, y, x), in that order.
    """
    xp = pad_spatial(x, padding)  # (N, C, Hp, Wp)
    windows = sliding_windows(xp, kernel, stride)  # (N, C, Ho, Wo, kh, kw), a view
    n, c, ho, wo = windows.shape[:4]
    cols = np.empty((c, *kernel, n, ho, wo), dtype=x.dtype)  # the one copy
    np.copyto(cols, windows.transpose(1, 4, 5, 0, 2, 3))
    return cols.reshape(c * kernel[0] * kernel[1], n * ho * wo)


def col2im(dcols: np.ndarray, input_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair) -> np.ndarray:
    """Adjoint of `im2col`: add every column's entries back onto the input positions they came from.

    Inputs:
    - dcols: (C*kh*kw, N*Ho*Wo).
    - input_shape: (N, C, H, W).

    Returns dx of shape (N, C, H, W): a transposed view of the (C, N, H, W) sums, to be copied by the
    caller into where it belongs.
    """
    n, c, h, w = input_shape
    (kh, kw), (ph, pw) = kernel, padding
    ho, wo = output_size((h + 2 * ph, w + 2 * pw), kernel, stride)
    patches = dcols.reshape(c, kh, kw, n, ho, wo).transpose(1, 2, 0, 3, 4, 5)  # (kh, kw, C, N, Ho, Wo), a view
    dxp = fold_windows(patches, (h + 2 * ph, w + 2 * pw), stride)  # (C, N, Hp, Wp)
    return dxp[:, :, ph : ph + h, pw : pw + w].transpose(1, 0, 2, 3)


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    groups: int = 1,
    *,
    keep_cols: bool = True,
) -> tuple[np.ndarray, Conv2dCache]:
    """2-D convolution forward pass (im2col + one matrix product).

    out[n, f, y, x] = bias[f] + sum_{c, i, j} weight[f, c, i, j] * xpad[n, g(f) * C/groups + c, y*sh + i, x*sw + j]

    Inputs:
    - x: (N, C, H, W) float array.
    - weight: (F, C // groups, kh, kw) filters.
    - bias: (F,) or None.
    - stride: int or (sh, sw), >= 1.
    - padding: int or (ph, pw) zeros added on both sides, >= 0.
    - groups: splits C and F into `groups` independent convolutions; must divide both.
    - keep_cols: keep the (C*kh*kw, N*Ho*Wo) column matrix for the backward (faster backward, kh*kw
      times the input's memory) or rebuild it there.

    Returns (out, cache): out of shape (N, F, Ho, Wo) with Ho = (H + 2ph - kh) // sh + 1 (likewise Wo),
    contiguous, in x's dtype.
    """
    x, weight, stride, padding, (ho, wo) = conv2d_geometry(x, weight, bias, stride, padding, groups)
    n = x.shape[0]
    f, _, kh, kw = weight.shape
    cols = im2col(x, (kh, kw), stride, padding)  # (C*kh*kw, N*Ho*Wo)
    out = np.matmul(
        weight.reshape(groups, f // groups, -1),  # (G, F/G, C/G*kh*kw)
        cols.reshape(groups, -1, cols.shape[1]),  # (G, C/G*kh*kw, N*Ho*Wo)
    ).reshape(f, n, ho, wo)  # (F, N, Ho, Wo)
    if bias is not None:
        out += bias.astype(x.dtype, copy=False).reshape(f, 1, 1, 1)
    out = np.ascontiguousarray(out.transpose(1, 0, 2, 3))  # (N, F, Ho, Wo)
    cache = Conv2dCache(x, weight, bias is not None, stride, padding, groups, cols if keep_cols else None)
    return out, cache


def conv2d_backward(dout: np.ndarray, cache: Conv2dCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """2-D convolution backward pass (see the module docstring for the two products).

    Inputs:
    - dout: (N, F, Ho, Wo), the upstream gradient.
    - cache: from `conv2d_forward` (or `conv2d_forward_loop`).

    Returns (dx, dweight, dbias): dx (N, C, H, W), dweight (F, C // groups, kh, kw), dbias (F,) or None
    when the forward had no bias.
    """
    x, weight, groups = cache.x, cache.weight, cache.groups
    f, _, kh, kw = weight.shape
    n = x.shape[0]
    ho, wo = output_size((x.shape[2] + 2 * cache.padding[0], x.shape[3] + 2 * cache.padding[1]), (kh, kw), cache.stride)
    dout = check_same_shape("dout", dout, (n, f, ho, wo))
    cols = cache.cols if cache.cols is not None else im2col(x, (kh, kw), cache.stride, cache.padding)
    dout2 = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(groups, f // groups, -1)  # (G, F/G, N*Ho*Wo)
    cols_g = cols.reshape(groups, -1, cols.shape[1])  # (G, C/G*kh*kw, N*Ho*Wo)
    w_g = weight.reshape(groups, f // groups, -1)  # (G, F/G, C/G*kh*kw)
    dweight = np.matmul(dout2, cols_g.transpose(0, 2, 1)).reshape(weight.shape)
    (ph, pw), (sh, sw) = cache.padding, cache.stride
    if (sh, sw) == (1, 1) and ph < kh and pw < kw and f <= x.shape[1]:
        # A stride-1 convolution's input gradient is the "full" convolution of dout with the filters
        # flipped in space and transposed in channels: an im2col and one product like the forward,
        # cheaper than writing the (C*kh*kw, N*Ho*Wo) dcols matrix and folding it, unless dout has more
        # channels than x (a first layer: 3 channels in, 32 out), when its im2col would be the larger.
        dx, _ = conv2d_forward(dout, _flipped_transposed(weight, groups), None, 1, (kh - 1 - ph, kw - 1 - pw),
                               groups, keep_cols=False)
    else:
        dcols = np.matmul(w_g.transpose(0, 2, 1), dout2).reshape(cols.shape)  # (C*kh*kw, N*Ho*Wo)
        dx = np.ascontiguousarray(col2im(dcols, x.shape, (kh, kw), cache.stride, cache.padding))
    dbias = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    return dx, dweight, dbias


def _flipped_transposed(weight: np.ndarray, groups: int) -> np.ndarray:
    """(F, C/G, kh, kw) filters -> (C, F/G, kh, kw): each group's channels swapped, kernels rotated by 180
    degrees."""
    f, cg, kh, kw = weight.shape
    grouped = weight.reshape(groups, f // groups, cg, kh, kw)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(grouped.transpose(0, 2, 1, 3, 4)).reshape(groups * cg, f // groups, kh, kw)


def conv2d_forward_loop(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    groups: int = 1,
) -> tuple[np.ndarray, Conv2dCache]:
    """The reference: the convolution's definition, one output position at a time. Same inputs and
    returns as `conv2d_forward`."""
    x, weight, stride, padding, (ho, wo) = conv2d_geometry(x, weight, bias, stride, padding, groups)
    f, cg, kh, kw = weight.shape
    fg = f // groups
    xp = pad_spatial(x, padding)  # (N, C, Hp, Wp)
    out = np.zeros((x.shape[0], f, ho, wo), dtype=x.dtype)
    for y in range(ho):
        for z in range(wo):
            field = xp[:, :, y * stride[0] : y * stride[0] + kh, z * stride[1] : z * stride[1] + kw]  # (N, C, kh, kw)
            for g in range(groups):
                w = weight[g * fg : (g + 1) * fg]  # (F/G, C/G, kh, kw)
                out[:, g * fg : (g + 1) * fg, y, z] = np.einsum("ncij,fcij->nf", field[:, g * cg : (g + 1) * cg], w)
    if bias is not None:
        out += bias.astype(x.dtype, copy=False).reshape(1, f, 1, 1)
    return out, Conv2dCache(x, weight, bias is not None, stride, padding, groups, None)


def conv2d_backward_loop(dout: np.ndarray, cache: Conv2dCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The reference backward: every output position sends its gradient to the filter (times the input
    field it saw) and to the input field (times the filter). Same contract as `conv2d_backward`."""
    x, weight, groups, (sh, sw) = cache.x, cache.weight, cache.groups, cache.stride
    n, _, h, w = x.shape
    f, cg, kh, kw = weight.shape
    fg = f // groups
    ph, pw = cache.padding
    xp = pad_spatial(x, cache.padding)  # (N, C, Hp, Wp)
    ho, wo = output_size(xp.shape[2:], (kh, kw), cache.stride)
    dout = check_same_shape("dout", dout, (n, f, ho, wo))
    dxp = np.zeros_like(xp)
    dweight = np.zeros_like(weight)
    for y in range(ho):
        for z in range(wo):
            rows, cols = slice(y * sh, y * sh + kh), slice(z * sw, z * sw + kw)
            for g in range(groups):
                fs, cs = slice(g * fg, (g + 1) * fg), slice(g * cg, (g + 1) * cg)
                d = dout[:, fs, y, z]  # (N, F/G)
                dweight[fs] += np.einsum("nf,ncij->fcij", d, xp[:, cs, rows, cols])
                dxp[:, cs, rows, cols] += np.einsum("nf,fcij->ncij", d, weight[fs])
    dbias = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    return dxp[:, :, ph : ph + h, pw : pw + w].copy(), dweight, dbias
