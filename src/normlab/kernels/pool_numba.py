"""Compiled (numba) twins of max and average pooling (no padding), for a block of (image, channel) planes.

Same contract as the NumPy path in `normlab.functional.pooling`, which stays the reference:

- max pooling outputs the window's maximum and the index (row-major, i * kw + j) of its FIRST maximum;
  a NaN makes the window's output NaN and freezes its index where it was before the NaN, as NumPy's
  running `maximum` / strictly-greater loop leaves it. The backward adds each window's gradient to the
  input position of that index; windows that overlap (stride < kernel) accumulate.
- average pooling sums each window in row-major order starting from its first element and divides by
  kh * kw in the input's dtype: the same operations in the same order as the NumPy path, so its outputs
  are equal to the bit. The backward gives every element of a window 1 / (kh * kw) of its gradient.

Layout: x and dx are (P, H, W), dout, out and argmax (P, Ho, Wo), all C-contiguous, P = N * C planes. A
call handles planes [start, stop): each function is serial and releases the GIL (`nogil`), and
`normlab.parallel.split_over_threads` runs one block of planes per thread.

Loop orders (their timings: docs/performance.md, "Compiled kernels"):

- window by window, kernel offsets innermost: with the kernel size and stride known at compile time LLVM
  unrolls the offsets and vectorizes across output columns. With them known only at run time the same
  loops are several times slower, so the two standard pools, 2x2 stride 2 and 3x3 stride 2, are compiled
  with literal sizes.
- row by row, one pass over an output row per kernel offset (the row stays in L1): vectorizes with any
  size and stride; the fallback for every other pool.
- max backward scatters each gradient through a table of in-plane offsets, one read-modify-write per
  window, with no specialization (ten times NumPy's speed for 2x2/2).

Updates are branch-free where the data decides: the running maximum is `max(m, v)` and the index
`max(index, offset * (v > m))` (offsets only grow). A data-dependent if/else compiles to branches that
mispredict on random data (several times slower). Indices are unsigned: signed ones that might be negative get
wraparound checks and do not vectorize.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, inline="always")
def _max_windows(x, kh, kw, sh, sw, start, stop, out, argmax):
    """Max pooling window by window; fast when kh, kw, sh, sw are literals (see the module docstring)."""
    ho, wo = np.uint64(out.shape[1]), np.uint64(out.shape[2])
    kh, kw, sh, sw = np.uint64(kh), np.uint64(kw), np.uint64(sh), np.uint64(sw)
    for p in range(np.uint64(start), np.uint64(stop)):
        for yo in range(ho):
            y0 = yo * sh
            for xo in range(wo):
                x0 = xo * sw
                m = x[p, y0, x0]
                index = np.uint64(0)
                nan = np.isnan(m)
                for i in range(kh):
                    for j in range(kw):
                        v = x[p, y0 + i, x0 + j]
                        index = max(index, (i * kw + j) * ((v > m) & (not nan)))  # after a NaN, frozen
                        m = max(m, v)
                        nan |= np.isnan(v)
                out[p, yo, xo] = np.nan if nan else m
                argmax[p, yo, xo] = index


@numba.njit(nogil=True, inline="always")
def _max_rows(x, kh, kw, sh, sw, start, stop, out, argmax):
    """Max pooling row by row: each kernel offset updates a whole output row."""
    ho, wo = np.uint64(out.shape[1]), np.uint64(out.shape[2])
    kh, kw, sh, sw = np.uint64(kh), np.uint64(kw), np.uint64(sh), np.uint64(sw)
    for p in range(np.uint64(start), np.uint64(stop)):
        for yo in range(ho):
            y0 = yo * sh
            for xo in range(wo):
                out[p, yo, xo] = x[p, y0, xo * sw]
                argmax[p, yo, xo] = 0
            for i in range(kh):
                for j in range(kw):
                    offset = argmax.dtype.type(i * kw + j)
                    for xo in range(wo):
                        v = x[p, y0 + i, xo * sw + j]
                        m = out[p, yo, xo]
                        greater = v > m  # never after a NaN: nothing is greater than NaN
                        argmax[p, yo, xo] = max(argmax[p, yo, xo], offset * greater)
                        out[p, yo, xo] = v if greater | np.isnan(v) else m


@numba.njit(nogil=True, cache=True)
def max_pool_forward(x, kh, kw, sh, sw, start, stop, out, argmax):
    """out[p, yo, xo] = max of x[p, yo*sh : yo*sh + kh, xo*sw : xo*sw + kw], argmax[p, yo, xo] = the
    row-major index of its first maximum, for planes start..stop-1."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        _max_windows(x, 2, 2, 2, 2, start, stop, out, argmax)
    elif kh == 3 and kw == 3 and sh == 2 and sw == 2:
        _max_windows(x, 3, 3, 2, 2, start, stop, out, argmax)
    else:
        _max_rows(x, kh, kw, sh, sw, start, stop, out, argmax)


@numba.njit(nogil=True, cache=True)
def max_pool_backward(dout, argmax, kh, kw, sh, sw, start, stop, dx):
    """dx[p] = every dout[p, yo, xo] added at the position of its window's argmax, 0 elsewhere, for
    planes start..stop-1 (windows in row-major order)."""
    h, w = np.uint64(dx.shape[1]), np.uint64(dx.shape[2])
    ho, wo = np.uint64(dout.shape[1]), np.uint64(dout.shape[2])
    kh, kw, sh, sw = np.uint64(kh), np.uint64(kw), np.uint64(sh), np.uint64(sw)
    overlapping = sh < kh or sw < kw
    planes = dx.reshape(dx.shape[0], dx.shape[1] * dx.shape[2])  # (P, H*W), a view
    delta = np.empty(kh * kw, np.uint64)  # in-plane offset of each window index
    for i in range(kh):
        for j in range(kw):
            delta[i * kw + j] = i * w + j
    for p in range(np.uint64(start), np.uint64(stop)):
        for t in range(h * w):
            planes[p, t] = 0
        for yo in range(ho):
            row = yo * sh * w
            for xo in range(wo):
                t = row + xo * sw + delta[np.uint64(argmax[p, yo, xo])]
                if overlapping:
                    planes[p, t] += dout[p, yo, xo]
                else:
                    planes[p, t] = dout[p, yo, xo]


@numba.njit(nogil=True, inline="always")
def _avg_windows(x, kh, kw, sh, sw, start, stop, out):
    """Average pooling window by window; fast when kh, kw, sh, sw are literals."""
    ho, wo = np.uint64(out.shape[1]), np.uint64(out.shape[2])
    kh, kw, sh, sw = np.uint64(kh), np.uint64(kw), np.uint64(sh), np.uint64(sw)
    area = out.dtype.type(kh * kw)
    for p in range(np.uint64(start), np.uint64(stop)):
        for yo in range(ho):
            y0 = yo * sh
            for xo in range(wo):
                x0 = xo * sw
                s = x[p, y0, x0]
                for j in range(np.uint64(1), kw):
                    s += x[p, y0, x0 + j]
                for i in range(np.uint64(1), kh):
                    for j in range(kw):
                        s += x[p, y0 + i, x0 + j]
                out[p, yo, xo] = s / area


@numba.njit(nogil=True, inline="always")
def _avg_rows(x, kh, kw, sh, sw, start, stop, out):
    """Average pooling row by row: each kernel offset adds into a whole output row."""
    ho, wo = np.uint64(out.shape[1]), np.uint64(out.shape[2])
    kh, kw, sh, sw = np.uint64(kh), np.uint64(kw), np.uint64(sh), np.uint64(sw)
    area = out.dtype.type(kh * kw)
    for p in range(np.uint64(start), np.uint64(stop)):
        for yo in range(ho):
            y0 = yo * sh
            for xo in range(wo):
                out[p, yo, xo] = x[p, y0, xo * sw]
            for j in range(np.uint64(1), kw):
                for xo in range(wo):
                    out[p, yo, xo] += x[p, y0, xo * sw + j]
            for i in range(np.uint64(1), kh):
                for j in range(kw):
                    for xo in range(wo):
                        out[p, yo, xo] += x[p, y0 + i, xo * sw + j]
            for xo in range(wo):
                out[p, yo, xo] /= area


@numba.njit(nogil=True, cache=True)
def avg_pool_forward(x, kh, kw, sh, sw, start, stop, out):
    """out[p, yo, xo] = mean of x[p, yo*sh : yo*sh + kh, xo*sw : xo*sw + kw], for planes start..stop-1."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        _avg_windows(x, 2, 2, 2, 2, start, stop, out)
    elif kh == 3 and kw == 3 and sh == 2 and sw == 2:
        _avg_windows(x, 3, 3, 2, 2, start, stop, out)
    else:
        _avg_rows(x, kh, kw, sh, sw, start, stop, out)


@numba.njit(nogil=True, inline="always")
def _zero_uncovered(dx, p, kh, kw, sh, sw, ho, wo):
    """Zero plane p of dx where the backward will not simply assign: all of it when windows overlap or
    leave gaps, else only the rows and columns that no window covers (the cropped remainder)."""
    h, w = np.uint64(dx.shape[1]), np.uint64(dx.shape[2])
    tiled = kh == sh and kw == sw
    for y in range(h):
        covered = tiled and y < ho * kh
        for x in range(wo * kw if covered else np.uint64(0), w):
            dx[p, y, x] = 0


@numba.njit(nogil=True, inline="always")
def _avg_backward_rows(dout, kh, kw, sh, sw, start, stop, dx):
    """Average pooling backward row by row: each kernel row spreads a whole output row. (Window by window
    is no faster here, even with literal sizes.)"""
    ho, wo = np.uint64(dout.shape[1]), np.uint64(dout.shape[2])
    kh, kw, sh, sw = np.uint64(kh), np.uint64(kw), np.uint64(sh), np.uint64(sw)
    area = dx.dtype.type(kh * kw)
    tiled = kh == sh and kw == sw
    for p in range(np.uint64(start), np.uint64(stop)):
        _zero_uncovered(dx, p, kh, kw, sh, sw, ho, wo)
        for yo in range(ho):
            for i in range(kh):
                y = yo * sh + i
                for xo in range(wo):
                    share = dout[p, yo, xo] / area
                    for j in range(kw):
                        if tiled:
                            dx[p, y, xo * sw + j] = share
                        else:
                            dx[p, y, xo * sw + j] += share


@numba.njit(nogil=True, cache=True)
def avg_pool_backward(dout, kh, kw, sh, sw, start, stop, dx):
    """dx[p] = every dout[p, yo, xo] / (kh*kw) added over its window, 0 where no window reaches, for
    planes start..stop-1."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        _avg_backward_rows(dout, 2, 2, 2, 2, start, stop, dx)
    elif kh == 3 and kw == 3 and sh == 2 and sw == 2:
        _avg_backward_rows(dout, 3, 3, 2, 2, start, stop, dx)
    else:
        _avg_backward_rows(dout, kh, kw, sh, sw, start, stop, dx)
