"""Compiled (numba) twins of the copies around a convolution's matrix products, for one chunk of images.

NumPy builds a chunk's columns with one `copyto` from a transposed sliding-window view, but its strided
copy pays a fixed cost per innermost run, and the runs are one output row (Wo elements): on 14x14 maps
and smaller that cost dominates (a (128, 128, 4, 4) convolution spent most of its time copying runs of 4
floats). These loops copy the same elements with no per-run cost and skip the padded buffer: the
padding's zeros are written directly.

Each function is serial and releases the GIL (`nogil`): `normlab.parallel` runs one chunk per thread.
Same layouts as `normlab.functional.conv`:

- x: (N, C, H, W); a chunk is images first..last-1, n = last - first;
- cols: (C*kh*kw, n*Ho*Wo), row (c, i, j) holding channel c at kernel offset (i, j) for every output
  position (image, y, x);
- channels-first products: (F, n*P), P = positions per image.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _valid_columns(j, pw, sw, w, wo):
    """Output columns xo whose input column xo*sw + j - pw lies inside [0, w): the range [lo, hi)."""
    lo = min(wo, max(0, -((j - pw) // sw)))  # ceil((pw - j) / sw), at most wo (padding wider than x)
    hi = min(wo, (w - 1 + pw - j) // sw + 1)
    return lo, max(lo, hi)


@numba.njit(nogil=True, cache=True)
def _output_size(h, kh, sh, ph, positions):
    """(Ho, Wo) of a convolution over height h whose output has `positions` = Ho * Wo per image."""
    ho = (h + 2 * ph - kh) // sh + 1
    return ho, positions // ho


@numba.njit(nogil=True, cache=True)
def im2col(x, first, last, kh, kw, sh, sw, ph, pw, cols):
    """cols[(c, i, j), (m, y, xo)] = x[first + m, c, y*sh + i - ph, xo*sw + j - pw], 0 outside x.

    One image plane at a time (it stays in L1 for its kh*kw rows of columns). The inner copies index with
    unsigned integers: with signed ones numba must allow for negative (wrap-around) indices, which kept
    the loop from vectorizing and made it 4-5x slower than NumPy's copy."""
    _, channels, h, w = x.shape
    n = last - first
    ho, wo = _output_size(h, kh, sh, ph, cols.shape[1] // n)
    for m in range(n):
        for c in range(channels):
            plane = x[first + m, c]
            for i in range(kh):
                for j in range(kw):
                    row = cols[(c * kh + i) * kw + j]
                    lo, hi = _valid_columns(j, pw, sw, w, wo)
                    for y in range(ho):
                        start = np.uint64((m * ho + y) * wo)
                        iy = y * sh + i - ph
                        if iy < 0 or iy >= h:
                            for k in range(np.uint64(wo)):
                                row[start + k] = 0
                            continue
                        source = plane[iy]
                        for k in range(np.uint64(lo)):
                            row[start + k] = 0
                        read = np.uint64(lo * sw + j - pw)
                        if sw == 1:  # a contiguous run: the loop vectorizes
                            for k in range(np.uint64(hi - lo)):
                                row[start + np.uint64(lo) + k] = source[read + k]
                        else:
                            step = np.uint64(sw)
                            for k in range(np.uint64(hi - lo)):
                                row[start + np.uint64(lo) + k] = source[read + k * step]
                        for k in range(np.uint64(hi), np.uint64(wo)):
                            row[start + k] = 0


@numba.njit(nogil=True, cache=True)
def col2im(dcols, first, last, kh, kw, sh, sw, ph, pw, dx):
    """The adjoint of `im2col`: dx[first:last] = the sums of every column entry onto the input position
    it was read from (dx's other images untouched). Same loop order and unsigned indexing as `im2col`."""
    _, channels, h, w = dx.shape
    n = last - first
    ho, wo = _output_size(h, kh, sh, ph, dcols.shape[1] // n)
    for m in range(n):
        for c in range(channels):
            plane = dx[first + m, c]
            plane[:, :] = 0
            for i in range(kh):
                for j in range(kw):
                    row = dcols[(c * kh + i) * kw + j]
                    lo, hi = _valid_columns(j, pw, sw, w, wo)
                    step = np.uint64(sw)
                    for y in range(ho):
                        iy = y * sh + i - ph
                        if iy < 0 or iy >= h:
                            continue
                        start = np.uint64((m * ho + y) * wo + lo)
                        target = plane[iy]
                        write = np.uint64(lo * sw + j - pw)
                        for k in range(np.uint64(hi - lo)):
                            target[write + k * step] += row[start + k]


@numba.njit(nogil=True, cache=True)
def images_to_channels(src, first, last, dst):
    """dst[f, m*P + p] = src[first + m, f, p]: a chunk of (N, F, P) images as one (F, n*P) matrix."""
    channels, positions = src.shape[1], src.shape[2]
    for f in range(channels):
        for m in range(last - first):
            dst[f, m * positions : (m + 1) * positions] = src[first + m, f]


@numba.njit(nogil=True, cache=True)
def channels_to_images(src, bias, first, dst):
    """dst[first + m, f, p] = src[f, m*P + p] + bias[f]: an (F, n*P) product back into (N, F, P) images."""
    channels, positions = dst.shape[1], dst.shape[2]
    for m in range(src.shape[1] // positions):
        for f in range(channels):
            row = src[f, m * positions : (m + 1) * positions]
            image = dst[first + m, f]
            b = bias[f]
            for p in range(positions):
                image[p] = row[p] + b

