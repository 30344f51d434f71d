"""Compiled (numba) tile transforms of the Winograd convolution F(2x2, 3x3), channels-last, for one chunk
of images.

`normlab.functional.conv_winograd` holds the algorithm and its derivation; these are its four data
transforms, each a fixed pattern of additions on 4x4 tiles, with

    Bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]      At = [[1, 1, 1, 0], [0, 1, -1, -1]]

- `input_tiles`:          V[4a+b, t, :] = (Bt d Bt^T)[a, b], d the tile's 4x4 patch of padded pixels;
- `input_tiles_adjoint`:  dxp = the sum over tiles of Bt^T dV Bt, added back where each patch was read;
- `output_tiles`:         the tile's 2x2 output pixels = At M At^T, M = M[:, t, :] as 4x4;
- `output_tiles_adjoint`: dM[:, t, :] = At^T dY At, dY the tile's 2x2 output-gradient pixels.

Data are pixels (`normlab.kernels.pixels_numba`): xp (n, 2*th + 2, 2*tw + 2, C) holds a chunk of images
channels-last inside a zero border (padding, and room for the last tiles of odd maps); outputs are
(n, 2*th, 2*tw, F), cropped when copied back to NCHW. Tiles are numbered t = (m * th + ty) * tw + tx; tile
(ty, tx) reads pixel rows 2ty..2ty+3 and columns 2tx..2tx+3 and writes output rows 2ty, 2ty+1 and
columns 2tx, 2tx+1.

Every transform is separable: first the combinations of rows (for a whole row of tiles at once: a pixel
row is one contiguous run of W * C values), then of columns (per tile: runs of C values). Each step is
one of the vector loops below, with at most three loads and one store; a loop that combined all sixteen
values of a tile at once was 15x slower, because LLVM gives up vectorizing when it would need runtime
checks that sixteen outputs do not overlap sixteen inputs. The loops take row views starting at their
first element: the same loops over flat arrays at an offset ran 4-7x slower, not vectorized (LLVM cannot
prove that an unsigned offset plus the index does not wrap around). Serial and `nogil`: `normlab.parallel`
runs one chunk per thread.
"""

from __future__ import annotations

import numba
import numpy as np

KERNEL = {"nogil": True, "cache": True}
VECTOR = {"inline": "always", **KERNEL}

# ---------------------------------------------------------------------------------------------------
# Vector loops over 1-D runs of equal length (unsigned indices: numba's wrap-around check for signed
# ones would stop LLVM from vectorizing them).


@numba.njit(**VECTOR)
def _copy(out, a):
    for i in range(np.uint64(out.shape[0])):
        out[i] = a[i]


@numba.njit(**VECTOR)
def _negate(out, a):
    for i in range(np.uint64(out.shape[0])):
        out[i] = -a[i]


@numba.njit(**VECTOR)
def _add(out, a, b):
    for i in range(np.uint64(out.shape[0])):
        out[i] = a[i] + b[i]


@numba.njit(**VECTOR)
def _subtract(out, a, b):
    for i in range(np.uint64(out.shape[0])):
        out[i] = a[i] - b[i]


@numba.njit(**VECTOR)
def _add3(out, a, b, c):
    for i in range(np.uint64(out.shape[0])):
        out[i] = a[i] + b[i] + c[i]


@numba.njit(**VECTOR)
def _subtract2(out, a, b, c):
    for i in range(np.uint64(out.shape[0])):
        out[i] = a[i] - b[i] - c[i]


@numba.njit(**VECTOR)
def _accumulate(out, a):
    for i in range(np.uint64(out.shape[0])):
        out[i] += a[i]


@numba.njit(**VECTOR)
def _deduct(out, a):
    for i in range(np.uint64(out.shape[0])):
        out[i] -= a[i]


@numba.njit(**VECTOR)
def _accumulate_minus_plus(out, a, b, c):
    for i in range(np.uint64(out.shape[0])):
        out[i] += a[i] - b[i] + c[i]


@numba.njit(**VECTOR)
def _accumulate_plus_minus(out, a, b, c):
    for i in range(np.uint64(out.shape[0])):
        out[i] += a[i] + b[i] - c[i]


@numba.njit(**VECTOR)
def _columns(row, first, channels):
    """The four pixels first..first+3 of a pixel row (runs of `channels` values), as four slices: reshaping
    the slice to (4, channels) instead made `input_tiles` 1.3-3.4x slower (4x4 to 14x14 maps)."""
    c0 = first * channels
    return (row[c0 : c0 + channels], row[c0 + channels : c0 + 2 * channels],
            row[c0 + 2 * channels : c0 + 3 * channels], row[c0 + 3 * channels : c0 + 4 * channels])


# ---------------------------------------------------------------------------------------------------
# The four transforms


@numba.njit(**KERNEL)
def input_tiles(xp, n, th, tw, u, v):
    """v (16, n*th*tw, C) <- the transformed input tiles of the first n images of xp (., 2th+2, 2tw+2, C).
    u: scratch (4, (2tw+2) * C) for Bt d of one row of tiles."""
    channels = xp.shape[3]
    flat = xp.reshape(xp.shape[0], xp.shape[1], xp.shape[2] * channels)  # (n, Hp, Wp*C)
    for m in range(n):
        for ty in range(th):
            r = 2 * ty
            d0, d1, d2, d3 = flat[m, r], flat[m, r + 1], flat[m, r + 2], flat[m, r + 3]
            _subtract(u[0], d0, d2)  # u = Bt d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
            _add(u[1], d1, d2)
            _subtract(u[2], d2, d1)
            _subtract(u[3], d1, d3)
            for tx in range(tw):
                t = (m * th + ty) * tw + tx
                for a in range(4):  # V = u Bt^T: the same combinations of the tile's four columns
                    q0, q1, q2, q3 = _columns(u[a], 2 * tx, channels)
                    _subtract(v[4 * a, t], q0, q2)
                    _add(v[4 * a + 1, t], q1, q2)
                    _subtract(v[4 * a + 2, t], q2, q1)
                    _subtract(v[4 * a + 3, t], q1, q3)


@numba.njit(**KERNEL)
def input_tiles_adjoint(dv, n, th, tw, w, dxp):
    """dxp[:n] (., 2th+2, 2tw+2, C) <- the adjoint of `input_tiles` applied to dv (16, n*th*tw, C): zeroed,
    then every tile's Bt^T dV Bt added onto its patch. w: scratch (4, (2tw+2) * C)."""
    channels = dxp.shape[3]
    flat = dxp.reshape(dxp.shape[0], dxp.shape[1], dxp.shape[2] * channels)  # (n, Hp, Wp*C)
    flat[:n] = 0
    for m in range(n):
        for ty in range(th):
            w[:, :] = 0
            for tx in range(tw):
                t = (m * th + ty) * tw + tx
                for a in range(4):  # w = dV Bt, over the tile's columns: e0, e1 - e2 + e3, e1 + e2 - e0, -e3
                    q0, q1, q2, q3 = _columns(w[a], 2 * tx, channels)
                    e0, e1, e2, e3 = dv[4 * a, t], dv[4 * a + 1, t], dv[4 * a + 2, t], dv[4 * a + 3, t]
                    _accumulate(q0, e0)  # accumulated: neighbouring tiles share two columns
                    _accumulate_minus_plus(q1, e1, e2, e3)
                    _accumulate_plus_minus(q2, e1, e2, e0)
                    _deduct(q3, e3)
            r = 2 * ty  # dd = Bt^T w, over the rows, added onto the patches' rows (which overlap too)
            _accumulate(flat[m, r], w[0])
            _accumulate_minus_plus(flat[m, r + 1], w[1], w[2], w[3])
            _accumulate_plus_minus(flat[m, r + 2], w[1], w[2], w[0])
            _deduct(flat[m, r + 3], w[3])


@numba.njit(**KERNEL)
def output_tiles(mm, n, th, tw, r, yp):
    """yp[:n] (., 2th, 2tw, F) <- the inverse-transformed tiles of mm (16, n*th*tw, F). r: scratch (2, 4, F)."""
    for m in range(n):
        for ty in range(th):
            y0, y1 = yp[m, 2 * ty], yp[m, 2 * ty + 1]
            for tx in range(tw):
                t = (m * th + ty) * tw + tx
                for b in range(4):  # r = At M: rows m0 + m1 + m2 and m1 - m2 - m3
                    _add3(r[0, b], mm[b, t], mm[4 + b, t], mm[8 + b, t])
                    _subtract2(r[1, b], mm[4 + b, t], mm[8 + b, t], mm[12 + b, t])
                s = 2 * tx  # Y = r At^T: the same across the columns
                _add3(y0[s], r[0, 0], r[0, 1], r[0, 2])
                _subtract2(y0[s + 1], r[0, 1], r[0, 2], r[0, 3])
                _add3(y1[s], r[1, 0], r[1, 1], r[1, 2])
                _subtract2(y1[s + 1], r[1, 1], r[1, 2], r[1, 3])


@numba.njit(**KERNEL)
def output_tiles_adjoint(dyp, n, th, tw, q, dm):
    """dm (16, n*th*tw, F) <- the adjoint of `output_tiles` applied to dyp[:n] (., 2th, 2tw, F), whose
    pixels past the output's edge must be 0. q: scratch (4, 2tw * F)."""
    filters = dyp.shape[3]
    flat = dyp.reshape(dyp.shape[0], dyp.shape[1], dyp.shape[2] * filters)  # (n, 2th, 2tw*F)
    for m in range(n):
        for ty in range(th):
            g0, g1 = flat[m, 2 * ty], flat[m, 2 * ty + 1]
            _copy(q[0], g0)  # q = At^T dY: rows g0, g0 + g1, g0 - g1, -g1
            _add(q[1], g0, g1)
            _subtract(q[2], g0, g1)
            _negate(q[3], g1)
            for tx in range(tw):
                t = (m * th + ty) * tw + tx
                for a in range(4):  # dM = q At: columns left, left + right, left - right, -right
                    left = q[a, 2 * tx * filters : (2 * tx + 1) * filters]
                    right = q[a, (2 * tx + 1) * filters : (2 * tx + 2) * filters]
                    _copy(dm[4 * a, t], left)
                    _add(dm[4 * a + 1, t], left, right)
                    _subtract(dm[4 * a + 2, t], left, right)
                    _negate(dm[4 * a + 3, t], right)
