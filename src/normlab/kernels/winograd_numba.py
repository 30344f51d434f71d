"""Compiled (numba) tile transforms of the Winograd convolution F(2x2, 3x3), for one chunk of images.

`normlab.functional.conv_winograd` holds the algorithm and its derivation; these are its four data
transforms, each a fixed pattern of additions on 4x4 tiles, with

    Bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]      At = [[1, 1, 1, 0], [0, 1, -1, -1]]

- `input_tiles`:          V[4a+b, c, t] = (Bt d Bt^T)[a, b], d the tile's 4x4 input patch (0 outside x);
- `input_tiles_adjoint`:  dx = the sum over tiles of Bt^T dV Bt, added back where each patch was read;
- `output_tiles`:         the tile's 2x2 output = At m At^T + bias, m = M[:, f, t] as 4x4 (cropped at odd edges);
- `output_tiles_adjoint`: dM[:, f, t] = At^T dy At, dy the tile's 2x2 output gradient (0 past the edge).

Tiles are numbered t = (m * th + ty) * tw + tx within the chunk: image m of the chunk, th x tw tiles per
image; tile (ty, tx) reads padded input rows 2ty..2ty+3 and columns 2tx..2tx+3 and writes output rows
2ty, 2ty+1 and columns 2tx, 2tx+1. Each transform goes through one (image, channel) plane at a time via a
scratch plane with a zero border, so the tile loops need no bounds checks, and one row of tiles at a time
in two steps, the row combinations for every column, then the column combinations for every tile, each
an inner loop over a whole row that vectorizes (unsigned indices: numba's wrap-around check for signed
ones would stop that). The loops index the arrays in full rather than through row views: a view costs a
reference count update, and on 4x4 maps, with two tiles per row, those dominated. Serial and `nogil`:
`normlab.parallel` runs one chunk per thread.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def input_tiles(x, first, last, ph, pw, th, tw, scratch, v):
    """v (16, C, n*th*tw) <- the transformed input tiles of images x[first:last] (N, C, H, W).
    scratch: (2*th + 2, 2*tw + 2) in x's dtype; its border must stay 0 (it is zeroed here)."""
    _, channels, h, w = x.shape
    width, tiles = np.uint64(scratch.shape[1]), np.uint64(tw)
    u = np.empty((4, scratch.shape[1]), scratch.dtype)  # Bt d for one row of tiles
    scratch[:, :] = 0
    for m in range(last - first):
        for c in range(channels):
            for r in range(h):
                for s in range(w):
                    scratch[r + ph, s + pw] = x[first + m, c, r, s]
            for ty in range(th):
                r0 = np.uint64(2 * ty)
                for s in range(width):  # u = Bt d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
                    d0, d1, d2, d3 = scratch[r0, s], scratch[r0 + 1, s], scratch[r0 + 2, s], scratch[r0 + 3, s]
                    u[0, s], u[1, s], u[2, s], u[3, s] = d0 - d2, d1 + d2, d2 - d1, d1 - d3
                base = np.uint64((m * th + ty) * tw)
                for a in range(4):  # V = u Bt^T: the same combinations across the columns of each tile
                    k = np.uint64(4 * a)
                    for tx in range(tiles):
                        t, s = base + tx, 2 * tx
                        v[k, c, t] = u[a, s] - u[a, s + 2]
                        v[k + 1, c, t] = u[a, s + 1] + u[a, s + 2]
                        v[k + 2, c, t] = u[a, s + 2] - u[a, s + 1]
                        v[k + 3, c, t] = u[a, s + 1] - u[a, s + 3]


@numba.njit(nogil=True, cache=True)
def input_tiles_adjoint(dv, first, last, ph, pw, th, tw, scratch, dx):
    """dx[first:last] (N, C, H, W) <- the adjoint of `input_tiles` applied to dv (16, C, n*th*tw).
    scratch: (2*th + 2, 2*tw + 2) in dx's dtype."""
    _, channels, h, w = dx.shape
    tiles = np.uint64(tw)
    q = np.empty((4, 4, tw), scratch.dtype)  # Bt^T dV for one row of tiles: q[a, b] over the tiles
    for m in range(last - first):
        for c in range(channels):
            scratch[:, :] = 0
            for ty in range(th):
                base = np.uint64((m * th + ty) * tw)
                for b in range(4):  # q = Bt^T e: rows e0, e1 - e2 + e3, e1 + e2 - e0, -e3 (e_i the i-th row of 4)
                    for tx in range(tiles):
                        t = base + tx
                        e0, e1, e2, e3 = dv[b, c, t], dv[4 + b, c, t], dv[8 + b, c, t], dv[12 + b, c, t]
                        q[0, b, tx], q[1, b, tx], q[2, b, tx], q[3, b, tx] = e0, e1 - e2 + e3, e1 + e2 - e0, -e3
                for a in range(4):
                    # dd = q Bt across each tile's columns, added onto the patch; two passes, because
                    # neighbouring tiles' patches share two columns
                    r = np.uint64(2 * ty + a)
                    for tx in range(tiles):
                        s = 2 * tx
                        scratch[r, s] += q[a, 0, tx]
                        scratch[r, s + 1] += q[a, 1, tx] - q[a, 2, tx] + q[a, 3, tx]
                    for tx in range(tiles):
                        s = 2 * tx
                        scratch[r, s + 2] += q[a, 1, tx] + q[a, 2, tx] - q[a, 0, tx]
                        scratch[r, s + 3] -= q[a, 3, tx]
            for r in range(h):
                for s in range(w):
                    dx[first + m, c, r, s] = scratch[r + ph, s + pw]


@numba.njit(nogil=True, cache=True)
def output_tiles(mm, bias, first, last, th, tw, scratch, out):
    """out[first:last] (N, F, Ho, Wo) <- the inverse-transformed tiles of mm (16, F, n*th*tw) plus bias (F,).
    scratch: (2*th, 2*tw) in out's dtype."""
    _, filters, ho, wo = out.shape
    tiles = np.uint64(tw)
    r = np.empty((2, 4, tw), scratch.dtype)  # At m for one row of tiles: r[i, b] over the tiles
    for m in range(last - first):
        for f in range(filters):
            bf = bias[f]
            for ty in range(th):
                base = np.uint64((m * th + ty) * tw)
                for b in range(4):  # r = At m: rows m0 + m1 + m2 and m1 - m2 - m3
                    for tx in range(tiles):
                        t = base + tx
                        m0, m1, m2, m3 = mm[b, f, t], mm[4 + b, f, t], mm[8 + b, f, t], mm[12 + b, f, t]
                        r[0, b, tx], r[1, b, tx] = m0 + m1 + m2, m1 - m2 - m3
                for i in range(2):  # y = r At^T, plus the bias
                    row = np.uint64(2 * ty + i)
                    for tx in range(tiles):
                        s = 2 * tx
                        scratch[row, s] = r[i, 0, tx] + r[i, 1, tx] + r[i, 2, tx] + bf
                        scratch[row, s + 1] = r[i, 1, tx] - r[i, 2, tx] - r[i, 3, tx] + bf
            for row in range(ho):
                for s in range(wo):
                    out[first + m, f, row, s] = scratch[row, s]


@numba.njit(nogil=True, cache=True)
def output_tiles_adjoint(dout, first, last, th, tw, scratch, dmm):
    """dmm (16, F, n*th*tw) <- the adjoint of `output_tiles` applied to dout[first:last] (N, F, Ho, Wo).
    scratch: (2*th, 2*tw) in dout's dtype; its rows and columns past Ho, Wo stay 0."""
    _, filters, ho, wo = dout.shape
    width, tiles = np.uint64(2 * tw), np.uint64(tw)
    q = np.empty((4, 2 * tw), scratch.dtype)  # At^T dy for one row of tiles
    scratch[:, :] = 0
    for m in range(last - first):
        for f in range(filters):
            for row in range(ho):
                for s in range(wo):
                    scratch[row, s] = dout[first + m, f, row, s]
            for ty in range(th):
                r0 = np.uint64(2 * ty)
                for s in range(width):  # q = At^T dy: rows dy0, dy0 + dy1, dy0 - dy1, -dy1
                    g0, g1 = scratch[r0, s], scratch[r0 + 1, s]
                    q[0, s], q[1, s], q[2, s], q[3, s] = g0, g0 + g1, g0 - g1, -g1
                base = np.uint64((m * th + ty) * tw)
                for a in range(4):  # dM = q At: columns q0, q0 + q1, q0 - q1, -q1 of each tile
                    k = np.uint64(4 * a)
                    for tx in range(tiles):
                        t = base + tx
                        left, right = q[a, 2 * tx], q[a, 2 * tx + 1]
                        dmm[k, f, t], dmm[k + 1, f, t], dmm[k + 2, f, t], dmm[k + 3, f, t] = (
                            left, left + right, left - right, -right)
