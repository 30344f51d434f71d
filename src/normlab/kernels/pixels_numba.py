"""Compiled (numba) copies for channels-last convolutions: NCHW images to and from "pixels", and the
im2row columns of a chunk of pixels with their adjoint.

A pixels array holds a chunk of n images channels-last and padded: xp (n, Hp, Wp, C) with xp[m, ph + r,
pw + s, c] = x[first + m, c, r, s] and zeros around. Every pixel's C channels are contiguous, so the copies
that follow move runs of C (or kw * C) values, however small the map: on 7x7 and 4x4 maps the NCHW
im2col's runs are 4-7 values and its fixed cost per run dominated (`normlab.functional.conv_channels_last`
measures both). The zero border makes the padding free: no loop checks bounds.

- `to_pixels` / `from_pixels`: the transposing copies in and out (with the crop and a bias on the way out);
- `im2row`: rows[(m, y, xo), (i, j, c)] = xp[m, y*sh + i, xo*sw + j, c], one row per output position;
- `row2im`: its adjoint, the rows added back onto the pixels they were read from.

Each function is serial and releases the GIL (`nogil`): `normlab.parallel` runs one chunk per thread.
Inner loops index with unsigned integers, so LLVM vectorizes them (numba's wrap-around check for signed
ones stops it).
"""

from __future__ import annotations

import numba
import numpy as np

KERNEL = {"nogil": True, "cache": True}


@numba.njit(**KERNEL)
def to_pixels(x, first, last, ph, pw, xp):
    """xp[m, ph + r, pw + s, c] = x[first + m, c, r, s] for the n = last - first images of x (N, C, H, W).
    Writes only that interior: xp's border keeps whatever it held (zeros, as the callers allocate it).

    Loop order: plane by plane, so x, which comes from main memory, is read in one sequential stream;
    the scattered writes go to one image's pixels, which stay in L2. Reading a row of every plane in turn
    instead (64 streams 4 KB apart on (64, 32, 32) images) made the copy 4x slower inside a convolution."""
    _, channels, h, w = x.shape
    for m in range(last - first):
        for c in range(channels):
            plane = x[first + m, c]
            for r in range(h):
                row = xp[m, ph + r]
                for s in range(w):
                    row[pw + s, c] = plane[r, s]


@numba.njit(**KERNEL)
def from_pixels(xp, bias, first, last, ph, pw, out):
    """out[first + m, f, r, s] = xp[m, ph + r, pw + s, f] + bias[f] for out (N, F, Ho, Wo): the pixels'
    interior, cropped and transposed back to NCHW; plane by plane, so out is written in one stream."""
    _, filters, ho, wo = out.shape
    for m in range(last - first):
        for f in range(filters):
            b = bias[f]
            plane = out[first + m, f]
            for r in range(ho):
                row = xp[m, ph + r]
                for s in range(wo):
                    plane[r, s] = row[pw + s, f] + b


@numba.njit(**KERNEL)
def im2row(xp, n, kh, kw, sh, sw, ho, wo, rows):
    """rows (n*Ho*Wo, kh*kw*C) <- the receptive field of every output position of the first n images of
    xp (., Hp, Wp, C): row (m, y, xo) is xp[m, y*sh + i, xo*sw + j, :] for i, j in order, and for a fixed i
    the kw pixels are adjacent, so each (position, i) is one contiguous run of kw * C values."""
    channels = xp.shape[3]
    run = np.uint64(kw * channels)
    flat = xp.reshape(xp.shape[0], xp.shape[1], xp.shape[2] * channels)  # (n, Hp, Wp*C)
    for m in range(n):
        for y in range(ho):
            for xo in range(wo):
                row = rows[(m * ho + y) * wo + xo]
                start = np.uint64(xo * sw * channels)
                for i in range(kh):
                    source = flat[m, y * sh + i]
                    base = np.uint64(i) * run
                    for k in range(run):
                        row[base + k] = source[start + k]


@numba.njit(**KERNEL)
def row2im(drows, n, kh, kw, sh, sw, ho, wo, dxp):
    """The adjoint of `im2row`: dxp[:n] (., Hp, Wp, C) = every row entry added back onto the pixel it was
    read from (the border included, which the caller crops). Zeroes dxp[:n] first."""
    channels = dxp.shape[3]
    run = np.uint64(kw * channels)
    flat = dxp.reshape(dxp.shape[0], dxp.shape[1], dxp.shape[2] * channels)  # (n, Hp, Wp*C)
    flat[:n] = 0
    for m in range(n):
        for y in range(ho):
            for xo in range(wo):
                row = drows[(m * ho + y) * wo + xo]
                start = np.uint64(xo * sw * channels)
                for i in range(kh):
                    target = flat[m, y * sh + i]
                    base = np.uint64(i) * run
                    for k in range(run):
                        target[start + k] += row[base + k]

