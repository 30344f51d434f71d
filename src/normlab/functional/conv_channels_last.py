"""Convolution by im2row: the channels-last twin of im2col, for layers with many channels on small maps.

Each chunk of images is copied into padded pixels xp (n, Hp, Wp, C) (`normlab.kernels.pixels_numba`), and
every output position gets one row of its receptive field, (i, j, c) in order, so the chunk's convolution is
one product with the filters reordered to match, Wr (F, kh*kw*C) with Wr[f, (i, j, c)] = W[f, c, i, j]:

    rows = im2row(xp)                  (n*P, kh*kw*C)      P = Ho*Wo output positions per image
    out  = rows @ Wr^T + bias          (n*P, F)            copied back to (n, F, Ho, Wo)

and with d the chunk of dout as (n*P, F), the backward is

    dWr  += d^T @ rows                 (F, kh*kw*C)        the rows rebuilt from x
    dxp   = row2im(d @ Wr)             (n, Hp, Wp, C)      cropped and copied back to (n, C, H, W)

Why channels-last: the NCHW im2col (`normlab.functional.conv`) copies runs of Wo values, 4 to 7 on the 7x7
and 4x4 maps of a small ResNet's last stages, and its fixed cost per run made the copies cost as much as
the products; here every copy is a run of kw*C values. The price is the two transposing copies between
NCHW and pixels, one pass over the input and one over the output, which on large maps with few channels
outweigh the gain: `channels_last_applies` keeps those on im2col. Compiled (numba) only, like Winograd.
"""

from __future__ import annotations

import numpy as np

from normlab import memory
from normlab.functional._windows import Pair
from normlab.kernels.backend import compiled_twin
from normlab.parallel import split_over_threads

ROWS_PER_PRODUCT = 1024  # output positions per chunk: rows of kh*kw*C values (1152 for 128 channels, 3x3)
MIN_CHANNELS = 16  # fewer and the runs are short again, while the transposing copies still cost a pass
MAX_POSITIONS = 8 * 8  # larger maps have long enough runs for im2col, which skips those two copies


def channels_last_applies(x_shape: tuple[int, ...], kernel: Pair, groups: int, out_size: Pair, kernels) -> bool:
    """Whether `conv2d_forward` takes this path (when Winograd does not): compiled copies, no groups, and a
    layer where im2row beats im2col: 16 or more input channels, a kernel larger than 1x1 (a 1x1 layer's
    im2col is a plain subsampling copy, while the pixels still hold the whole input) and at most 8x8 output
    positions per image."""
    return (kernels is not None and groups == 1 and x_shape[1] >= MIN_CHANNELS and kernel[0] * kernel[1] > 1
            and out_size[0] * out_size[1] <= MAX_POSITIONS)


def reordered_filters(weight: np.ndarray) -> np.ndarray:
    """Wr (F, kh*kw*C): each filter's values in im2row's (i, j, c) order."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(weight.shape[0], -1)


class RowWork:
    """One thread's buffers for chunks of `images` images: the padded input pixels (their zero border is
    written once), the rows, the product, and for the backward the input-gradient pixels. Recycled
    (`normlab.memory`): fresh buffers of a few MB page-fault on every call."""

    def __init__(self, images: int, x_shape: tuple[int, ...], kernel: Pair, padding: Pair, out_size: Pair,
                 filters: int, dtype, input_grad: bool = False):
        c, h, w = x_shape[1:]
        positions = images * out_size[0] * out_size[1]
        self.images = images
        self.pixels = memory.zeros((images, h + 2 * padding[0], w + 2 * padding[1], c), dtype)
        self.rows = memory.empty((positions, kernel[0] * kernel[1] * c), dtype)
        self.product = memory.empty((positions, filters), dtype)
        self.dx_pixels = memory.empty_like(self.pixels) if input_grad else None


def chunk_images(grid: Pair, start: int, stop: int, per_chunk: int = ROWS_PER_PRODUCT) -> int:
    """Images per chunk: about `per_chunk` output positions (rows here; Winograd's 2x2 tiles) when an image
    has a grid of them, at most the thread's own images."""
    return min(max(1, per_chunk // (grid[0] * grid[1])), stop - start)


def channels_last_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: Pair, padding: Pair,
                          out_size: Pair) -> np.ndarray:
    """The convolution of x (N, C, H, W) C-contiguous with weight (F, C, kh, kw) plus bias (F,), groups 1.
    Returns (N, F, Ho, Wo) in x's dtype."""
    n, f, (kh, kw) = x.shape[0], weight.shape[0], weight.shape[2:]
    wr = reordered_filters(weight)  # (F, K)
    out = memory.empty((n, f, *out_size), x.dtype)
    pixels = compiled_twin("pixels", "numba")

    def images(start: int, stop: int) -> None:
        work = RowWork(chunk_images(out_size, start, stop), x.shape, (kh, kw), padding, out_size, f, x.dtype)
        for first in range(start, stop, work.images):
            last = min(first + work.images, stop)
            rows = work.rows[: (last - first) * out_size[0] * out_size[1]]  # (n*P, K)
            pixels.to_pixels(x, first, last, *padding, work.pixels)
            pixels.im2row(work.pixels, last - first, kh, kw, *stride, *out_size, rows)
            product = np.matmul(rows, wr.T, out=work.product[: rows.shape[0]])  # (n*P, F)
            pixels.from_pixels(product.reshape(last - first, *out_size, f), bias, first, last, 0, 0, out)

    split_over_threads(images, n)
    return out


def channels_last_backward(dout: np.ndarray, x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
                           input_grad: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """Gradients of `channels_last_forward` for dout (N, F, Ho, Wo), C-contiguous. Returns (dx (N, C, H, W)
    or None when input_grad is False, dweight (F, C, kh, kw)); the bias's gradient is conv2d_backward's."""
    n, c = x.shape[:2]
    f, (kh, kw), out_size = weight.shape[0], weight.shape[2:], dout.shape[2:]
    wr = reordered_filters(weight)  # (F, K)
    dx = memory.empty_like(x) if input_grad else None
    no_bias = np.zeros(c, x.dtype)
    pixels = compiled_twin("pixels", "numba")

    def images(start: int, stop: int) -> np.ndarray:
        work = RowWork(chunk_images(out_size, start, stop), x.shape, (kh, kw), padding, out_size, f, x.dtype,
                       input_grad)
        dwr = np.zeros_like(wr)  # (F, K)
        for first in range(start, stop, work.images):
            last = min(first + work.images, stop)
            rows = work.rows[: (last - first) * out_size[0] * out_size[1]]  # (n*P, K)
            d = work.product[: rows.shape[0]]  # (n*P, F)
            pixels.to_pixels(dout, first, last, 0, 0, d.reshape(last - first, *out_size, f))
            pixels.to_pixels(x, first, last, *padding, work.pixels)
            pixels.im2row(work.pixels, last - first, kh, kw, *stride, *out_size, rows)
            dwr += d.T @ rows
            if input_grad:
                drows = np.matmul(d, wr, out=rows)  # (n*P, K), over the rows: read by the product above already
                pixels.row2im(drows, last - first, kh, kw, *stride, *out_size, work.dx_pixels)
                pixels.from_pixels(work.dx_pixels, no_bias, first, last, *padding, dx)
        return dwr

    dwr = sum(split_over_threads(images, n))  # (F, K)
    dweight = np.ascontiguousarray(dwr.reshape(f, kh, kw, c).transpose(0, 3, 1, 2))  # (F, C, kh, kw)
    return dx, dweight
