"""2-D convolution (cross-correlation, as in every deep learning library) over NCHW arrays.

Two implementations with one contract:

- `conv2d_forward` / `conv2d_backward`: the fast path, a chunk of images at a time (about
  COLUMNS_PER_PRODUCT output positions: 2 images of 32x32, 11 of 14x14). im2col lays every receptive
  field of the chunk out as a column of a (C*kh*kw, n*Ho*Wo) matrix with a single copy (from a
  `sliding_window_view`, or compiled loops with numba), so the chunk's convolution is ONE matrix product
  with the (F, C*kh*kw) filter matrix, in the input's dtype (float32 stays float32); its (F, n*Ho*Wo)
  result is transposed into the NCHW output. The memory order keeps W innermost on both sides of the
  copy. With d = the chunk of dout as (F, n*Ho*Wo), the backward is, per chunk,

      dW += d @ cols.T                                      the columns rebuilt from x (when d is not needed
                                                            for dx, image by image from dout as it is)
      dx = col2im(W2.T @ d)                                 strided convolutions
      dx = conv(dout, W flipped and transposed, pad k-1-p)  stride 1, F <= C: an im2col and a product again

  Why chunks and not one (C*kh*kw, N*Ho*Wo) matrix for the whole batch: that matrix is kh*kw times the
  input (151 MB for (64, 64, 32, 32) float32 and 3x3 filters), so building it meant page-faulting it in,
  writing it to main memory on one thread and reading it back; a chunk's columns (4.7 MB there) stay in
  cache. The chunks are split over threads (`normlab.parallel`), each with BLAS on one thread, so the
  copies run in parallel too (the measurement: docs/performance.md, "Measurements behind design choices").
- With numba installed, 3x3 stride-1 layers with 16+ channels on 4x4+ maps take Winograd's F(2x2, 3x3)
  (`normlab.functional.conv_winograd`: 2.25x fewer multiplications, data channels-last), and other layers
  with 16+ channels and kernels larger than 1x1 on maps of up to 8x8 take im2row
  (`normlab.functional.conv_channels_last`), which copies runs of kw*C contiguous values where im2col's
  are Wo long. Same contract.
- `conv2d_forward_loop` / `conv2d_backward_loop`: the direct definition, a Python loop over output
  positions. Slow; kept as the reference the tests hold the fast path to.

Grouped convolution (groups > 1) splits the channels into `groups` independent convolutions; the fast
path then does one batched product over the groups per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from normlab import memory
from normlab.functional._checks import check_cache, check_float_array, check_param, check_positive_int, check_same_shape
from normlab.functional._windows import Pair, as_pair, fold_windows, output_size, pad_spatial, sliding_windows
from normlab.functional.conv_channels_last import channels_last_applies, channels_last_backward, channels_last_forward
from normlab.functional.conv_winograd import winograd_applies, winograd_backward, winograd_forward
from normlab.kernels.backend import compiled_twin
from normlab.parallel import split_over_threads


@dataclass(frozen=True)
class Conv2dCache:
    """What the backward needs: the input, not its columns (the backward rebuilds them, image by image)."""

    x: np.ndarray  # (N, C, H, W): the input
    weight: np.ndarray  # (F, C // groups, kh, kw), in x's dtype
    has_bias: bool
    stride: Pair
    padding: Pair
    groups: int
    compiled: bool = False  # the copies ran compiled (flags, not modules: caches must deep-copy)
    winograd: bool = False  # the forward took the Winograd path
    channels_last: bool = False  # the forward took the im2row path

    @property
    def kernels(self) -> ModuleType | None:
        """`normlab.kernels.im2col_numba` when the copies ran compiled, else None."""
        return compiled_twin("conv", "numba") if self.compiled else None


def conv2d_geometry(x, weight, bias, stride, padding, groups) -> tuple[np.ndarray, np.ndarray, Pair, Pair, Pair]:
    """Check a convolution's arguments. Returns (x, weight in x's dtype, stride, padding, (Ho, Wo))."""
    x = check_float_array("x", x, ndims=(4,))
    weight = check_float_array("weight", weight, ndims=(4,))
    groups = check_positive_int("groups", groups)
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


COLUMNS_PER_PRODUCT = 2048  # output positions per matrix product: fewer and BLAS runs below its speed


def images_per_chunk(positions_per_image: int) -> int:
    """Images per im2col chunk, so that each product has about COLUMNS_PER_PRODUCT columns (one image of
    32x32 positions or more; 11 of 14x14)."""
    return max(1, -(-COLUMNS_PER_PRODUCT // positions_per_image))


class Chunk:
    """One thread's workspace for a chunk of images at a time: their im2col columns, and the transposes
    between (n, F, P) images and an (F, n*P) matrix, rebuilt in place. A chunk's columns take C*kh*kw *
    COLUMNS_PER_PRODUCT values (2 images of 64 channels, 32x32, 3x3 filters: 4.7 MB), in cache up to a few
    hundred channels.

    With `kernels` (`normlab.kernels.im2col_numba`) the copies are compiled loops; without, NumPy copies
    from transposed views (a per-run cost that dominates on maps of 14x14 and smaller).
    """

    def __init__(self, image_shape: tuple[int, int, int], images: int, kernel: Pair, stride: Pair, padding: Pair,
                 groups: int, dtype, kernels=None):
        c, h, w = image_shape
        self.kernel, self.stride, self.padding, self.groups, self.kernels = kernel, stride, padding, groups, kernels
        self.rows = c * kernel[0] * kernel[1]
        self.out_size = output_size((h + 2 * padding[0], w + 2 * padding[1]), kernel, stride)
        self.buffer = np.empty(self.rows * images * self.out_size[0] * self.out_size[1], dtype)
        numpy_pads = kernels is None and (padding[0] or padding[1])
        self.padded = np.zeros((images, c, h + 2 * padding[0], w + 2 * padding[1]), dtype) if numpy_pads else None

    def columns(self, x: np.ndarray, first: int, last: int) -> np.ndarray:
        """The columns of images x[first:last] (C-contiguous (N, C, H, W)), as (G, C/G*kh*kw, n*Ho*Wo);
        valid until the next call."""
        n, (ho, wo), (kh, kw) = last - first, self.out_size, self.kernel
        cols = self.buffer[: self.rows * n * ho * wo]
        if self.kernels is not None:
            cols = cols.reshape(self.rows, n * ho * wo)
            self.kernels.im2col(x, first, last, kh, kw, *self.stride, *self.padding, cols)
        else:
            images = x[first:last]
            if self.padded is not None:
                (ph, pw), (h, w) = self.padding, x.shape[2:]
                self.padded[:n, :, ph : ph + h, pw : pw + w] = images
                images = self.padded[:n]  # (n, C, Hp, Wp), borders 0
            windows = sliding_windows(images, self.kernel, self.stride)  # (n, C, Ho, Wo, kh, kw), a view
            cols = cols.reshape(x.shape[1], kh, kw, n, ho, wo)  # (C, kh, kw, n, Ho, Wo)
            np.copyto(cols, windows.transpose(1, 4, 5, 0, 2, 3))
        return cols.reshape(self.groups, self.rows // self.groups, -1)

    def to_images(self, product: np.ndarray, bias: np.ndarray, out: np.ndarray, first: int) -> None:
        """out[first + m, f] = product[f, m*P:(m+1)*P] + bias[f], for a C-contiguous (F, n*P) product and
        (N, F, P) out."""
        if self.kernels is not None:
            self.kernels.channels_to_images(product, bias, first, out)
        else:
            f, positions = out.shape[1:]
            n = product.shape[1] // positions
            np.add(product.reshape(f, n, positions).transpose(1, 0, 2), bias[:, None], out=out[first : first + n])

    def col2im(self, dcols: np.ndarray, dx: np.ndarray, first: int, last: int) -> None:
        """Adjoint of `columns`: dx[first:last] = every column entry of dcols (C*kh*kw, n*Ho*Wo) added back
        onto the input position it came from."""
        if self.kernels is not None:
            self.kernels.col2im(dcols, first, last, *self.kernel, *self.stride, *self.padding, dx)
            return
        n, (c, h, w), (kh, kw), (ph, pw) = last - first, dx.shape[1:], self.kernel, self.padding
        patches = dcols.reshape(c, kh, kw, n, *self.out_size).transpose(1, 2, 3, 0, 4, 5)  # (kh, kw, n, C, Ho, Wo)
        dxp = fold_windows(patches, (h + 2 * ph, w + 2 * pw), self.stride)  # (n, C, Hp, Wp)
        dx[first:last] = dxp[:, :, ph : ph + h, pw : pw + w]


def images_to_channels(x: np.ndarray, first: int, last: int, kernels, buffer: np.ndarray) -> np.ndarray:
    """x[first:last] of a C-contiguous (N, F, P) array as an (F, n*P) matrix, written into the front of the
    flat `buffer`."""
    out = buffer[: x.shape[1] * (last - first) * x.shape[2]].reshape(x.shape[1], -1)
    if kernels is None:
        np.copyto(out.reshape(x.shape[1], last - first, -1), x[first:last].transpose(1, 0, 2))
    else:
        kernels.images_to_channels(x, first, last, out)
    return out


def product_into(a: np.ndarray, b: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """np.matmul(a, b) for stacks of matrices (G, m, k) and (G, k, n), written into the front of the flat
    `buffer`: work memory recycled chunk after chunk, where a fresh result of a few MB page-faults."""
    shape = (a.shape[0], a.shape[1], b.shape[2])
    return np.matmul(a, b, out=buffer[: shape[0] * shape[1] * shape[2]].reshape(shape))


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    groups: int = 1,
    *,
    backend: str = "auto",
) -> tuple[np.ndarray, Conv2dCache]:
    """2-D convolution forward pass: per chunk of images, im2col and one matrix product, the images split
    over threads (`normlab.parallel`).

    out[n, f, y, x] = bias[f] + sum_{c, i, j} weight[f, c, i, j] * xpad[n, g(f) * C/groups + c, y*sh + i, x*sw + j]

    Inputs:
    - x: (N, C, H, W) float array.
    - weight: (F, C // groups, kh, kw) filters.
    - bias: (F,) or None.
    - stride: int or (sh, sw), >= 1.
    - padding: int or (ph, pw) zeros added on both sides, >= 0.
    - groups: splits C and F into `groups` independent convolutions; must divide both.
    - backend: "auto", "numpy" or "numba" (`normlab.kernels.backend`): who does the copies around the
      products; the backward uses the same.

    Returns (out, cache): out of shape (N, F, Ho, Wo) with Ho = (H + 2ph - kh) // sh + 1 (likewise Wo),
    contiguous, in x's dtype. The cache holds x, not the columns: the backward rebuilds them in cache,
    which is cheaper than writing them to main memory and reading them back.
    """
    x, weight, stride, padding, (ho, wo) = conv2d_geometry(x, weight, bias, stride, padding, groups)
    kernels = compiled_twin("conv", backend, x)  # the name checked whatever the dtype
    x = np.ascontiguousarray(x)
    f, _, kh, kw = weight.shape
    b = np.zeros(f, x.dtype) if bias is None else bias.astype(x.dtype, copy=False)
    winograd = compiled_twin("winograd", backend) if kernels is not None else None
    if winograd_applies(weight.shape, stride, groups, (ho, wo), winograd):
        out = winograd_forward(x, weight, b, padding, (ho, wo), winograd)
        return out, Conv2dCache(x, weight, bias is not None, stride, padding, groups, True, True)
    if channels_last_applies(x.shape, (kh, kw), groups, (ho, wo), kernels):
        out = channels_last_forward(x, weight, b, stride, padding, (ho, wo))
        return out, Conv2dCache(x, weight, bias is not None, stride, padding, groups, True, channels_last=True)
    out = memory.empty((x.shape[0], f, ho, wo), x.dtype)
    w_g = weight.reshape(groups, f // groups, -1)  # (G, F/G, C/G*kh*kw)
    chunk = images_per_chunk(ho * wo)

    def images(start: int, stop: int) -> None:
        work = Chunk(x.shape[1:], chunk, (kh, kw), stride, padding, groups, x.dtype, kernels)
        products = memory.empty((f * chunk * ho * wo,), x.dtype)
        for first in range(start, stop, chunk):
            last = min(first + chunk, stop)
            product = product_into(w_g, work.columns(x, first, last), products)  # (G, F/G, n*Ho*Wo)
            work.to_images(product.reshape(f, -1), b, out.reshape(-1, f, ho * wo), first)

    split_over_threads(images, x.shape[0])
    return out, Conv2dCache(x, weight, bias is not None, stride, padding, groups, kernels is not None)


def conv2d_backward(dout: np.ndarray, cache: Conv2dCache, *, input_grad: bool = True
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """2-D convolution backward pass (see the module docstring for the products), chunk by chunk on
    threads like the forward.

    Inputs:
    - dout: (N, F, Ho, Wo), the upstream gradient.
    - cache: from `conv2d_forward` (or `conv2d_forward_loop`).
    - input_grad: False skips dx (the input is data, as for a network's first convolution).

    Returns (dx, dweight, dbias): dx (N, C, H, W) or None when input_grad is False, dweight
    (F, C // groups, kh, kw), dbias (F,) or None when the forward had no bias.
    """
    check_cache("conv2d_backward", cache, Conv2dCache, "conv2d_forward")
    x, weight, groups, stride, padding = cache.x, cache.weight, cache.groups, cache.stride, cache.padding
    kernels = cache.kernels
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    (ph, pw), fg = padding, f // groups
    ho, wo = output_size((h + 2 * ph, w + 2 * pw), (kh, kw), stride)
    dout = np.ascontiguousarray(check_same_shape("dout", dout, (n, f, ho, wo)))
    dbias = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    if cache.winograd:
        return *winograd_backward(dout, x, weight, padding, compiled_twin("winograd", "numba"), input_grad), dbias
    if cache.channels_last:
        return *channels_last_backward(dout, x, weight, stride, padding, input_grad), dbias
    dout3 = dout.reshape(n, f, ho * wo)
    dx = memory.empty_like(x) if input_grad else None
    chunk = images_per_chunk(ho * wo)
    # A stride-1 convolution's input gradient is the "full" convolution of dout with the filters flipped in
    # space and transposed in channels: an im2col and one product, like the forward. Unless dout has more
    # channels than x (a first layer: 1 channel in, 32 out), whose im2col would be the larger.
    full = stride == (1, 1) and ph < kh and pw < kw and f <= c
    if full:
        w_dx = _flipped_transposed(weight, groups).reshape(groups, c // groups, -1)  # (G, C/G, F/G*kh*kw)
        no_bias = np.zeros(c, x.dtype)
    else:
        w_t = weight.reshape(groups, fg, -1).transpose(0, 2, 1)  # (G, C/G*kh*kw, F/G)

    def images(start: int, stop: int) -> np.ndarray:
        x_work = Chunk((c, h, w), chunk, (kh, kw), stride, padding, groups, x.dtype, kernels)
        if input_grad and full:
            dout_work = Chunk((f, ho, wo), chunk, (kh, kw), (1, 1), (kh - 1 - ph, kw - 1 - pw), groups, x.dtype,
                              kernels)
        dweight = np.zeros((groups, fg, x_work.rows // groups), dtype=x.dtype)  # (G, F/G, C/G*kh*kw)
        copies_dout = groups > 1 or (input_grad and not full)  # d (F, n*P) is needed: by dx, or by grouped dW
        douts = memory.empty((f * chunk * ho * wo,), x.dtype) if copies_dout else None
        products = memory.empty((c * chunk * (h * w if full else kh * kw * ho * wo),), x.dtype) if input_grad else None
        for first in range(start, stop, chunk):
            last = min(first + chunk, stop)
            cols = x_work.columns(x, first, last)  # (G, C/G*kh*kw, n*Ho*Wo)
            if copies_dout:
                d = images_to_channels(dout3, first, last, kernels, douts).reshape(groups, fg, -1)  # (G, F/G, n*P)
                dweight += np.matmul(d, cols.transpose(0, 2, 1))
            else:  # dW image by image from dout as it is: no (F, n*P) copy
                per_image = cols.reshape(-1, last - first, ho * wo).transpose(1, 2, 0)  # (n, Ho*Wo, C*kh*kw)
                dweight[0] += np.matmul(dout3[first:last], per_image).sum(axis=0)
            if input_grad and full:
                product = product_into(w_dx, dout_work.columns(dout, first, last), products)  # (G, C/G, n*H*W)
                dout_work.to_images(product.reshape(c, -1), no_bias, dx.reshape(n, c, h * w), first)
            elif input_grad:
                dcols = product_into(w_t, d, products).reshape(c * kh * kw, -1)  # (C*kh*kw, n*Ho*Wo)
                x_work.col2im(dcols, dx, first, last)
        return dweight

    dweight = sum(split_over_threads(images, n)).reshape(weight.shape)
    return dx, dweight, dbias


def _flipped_transposed(weight: np.ndarray, groups: int) -> np.ndarray:
    """(F, C/G, kh, kw) filters -> (C, F/G, kh, kw): each group's channels swapped, kernels rotated by 180
    degrees."""
    f, cg, kh, kw = weight.shape
    grouped = weight.reshape(groups, f // groups, cg, kh, kw)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(grouped.transpose(0, 2, 1, 3, 4)).reshape(groups * cg, f // groups, kh, kw)


def conv2d_forward_loop(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int | Pair = 1,
                        padding: int | Pair = 0, groups: int = 1) -> tuple[np.ndarray, Conv2dCache]:
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
    return out, Conv2dCache(x, weight, bias is not None, stride, padding, groups)


def conv2d_backward_loop(dout: np.ndarray, cache: Conv2dCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The reference backward: every output position sends its gradient to the filter (times the input
    field it saw) and to the input field (times the filter). Same contract as `conv2d_backward`."""
    check_cache("conv2d_backward_loop", cache, Conv2dCache, "conv2d_forward")
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
