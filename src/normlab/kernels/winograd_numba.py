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
ones would stop that). Serial and `nogil`: `normlab.parallel` runs one chunk per thread.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def input_tiles(x, first, last, ph, pw, th, tw, scratch, v):
    """v (16, C, n*th*tw) <- the transformed input tiles of images x[first:last] (N, C, H, W).
    scratch: (2*th + 2, 2*tw + 2) in x's dtype; its border must stay 0 (it is zeroed here)."""
    _, channels, h, w = x.shape
    width = np.uint64(scratch.shape[1])
    tiles = np.uint64(tw)
    u = np.empty((4, scratch.shape[1]), scratch.dtype)  # Bt d for one row of tiles
    scratch[:, :] = 0
    for m in range(last - first):
        for c in range(channels):
            plane = x[first + m, c]
            for r in range(h):
                scratch[r + ph, pw : pw + w] = plane[r]
            for ty in range(th):
                d0, d1, d2, d3 = scratch[2 * ty], scratch[2 * ty + 1], scratch[2 * ty + 2], scratch[2 * ty + 3]
                u0, u1, u2, u3 = u[0], u[1], u[2], u[3]
                for s in range(width):  # u = Bt d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
                    u0[s], u1[s], u2[s], u3[s] = d0[s] - d2[s], d1[s] + d2[s], d2[s] - d1[s], d1[s] - d3[s]
                base = np.uint64((m * th + ty) * tw)
                for a in range(4):  # V = u Bt^T: the same combinations across the columns of each tile
                    ua = u[a]
                    v0, v1, v2, v3 = v[4 * a, c], v[4 * a + 1, c], v[4 * a + 2, c], v[4 * a + 3, c]
                    for tx in range(tiles):
                        s = 2 * tx
                        v0[base + tx] = ua[s] - ua[s + 2]
                        v1[base + tx] = ua[s + 1] + ua[s + 2]
                        v2[base + tx] = ua[s + 2] - ua[s + 1]
                        v3[base + tx] = ua[s + 1] - ua[s + 3]


@numba.njit(nogil=True, cache=True)
def input_tiles_adjoint(dv, first, last, ph, pw, th, tw, scratch, dx):
    """dx[first:last] (N, C, H, W) <- the adjoint of `input_tiles` applied to dv (16, C, n*th*tw).
    scratch: (2*th + 2, 2*tw + 2) in dx's dtype."""
    _, channels, h, w = dx.shape
    tiles = np.uint64(tw)
    q = np.empty((4, tw), scratch.dtype)  # one row of Bt^T dV, for one column index b of every tile
    for m in range(last - first):
        for c in range(channels):
            scratch[:, :] = 0
            for ty in range(th):
                base = np.uint64((m * th + ty) * tw)
                rows = (scratch[2 * ty], scratch[2 * ty + 1], scratch[2 * ty + 2], scratch[2 * ty + 3])
                for a in range(4):
                    # q[b] = row a of Bt^T e, at column b of each tile: e0, e1 - e2 + e3, e1 + e2 - e0, -e3
                    for b in range(4):
                        qb, e0, e1, e2, e3 = q[b], dv[b, c], dv[4 + b, c], dv[8 + b, c], dv[12 + b, c]
                        for tx in range(tiles):
                            t = base + tx
                            if a == 0:
                                qb[tx] = e0[t]
                            elif a == 1:
                                qb[tx] = e1[t] - e2[t] + e3[t]
                            elif a == 2:
                                qb[tx] = e1[t] + e2[t] - e0[t]
                            else:
                                qb[tx] = -e3[t]
                    # dd = q Bt across each tile's columns, added onto the patch; two passes, because
                    # neighbouring tiles' patches share two columns
                    row, q0, q1, q2, q3 = rows[a], q[0], q[1], q[2], q[3]
                    for tx in range(tiles):
                        row[2 * tx] += q0[tx]
                        row[2 * tx + 1] += q1[tx] - q2[tx] + q3[tx]
                    for tx in range(tiles):
                        row[2 * tx + 2] += q1[tx] + q2[tx] - q0[tx]
                        row[2 * tx + 3] -= q3[tx]
            plane = dx[first + m, c]
            for r in range(h):
                plane[r] = scratch[r + ph, pw : pw + w]


@numba.njit(nogil=True, cache=True)
def output_tiles(mm, bias, first, last, th, tw, scratch, out):
    """out[first:last] (N, F, Ho, Wo) <- the inverse-transformed tiles of mm (16, F, n*th*tw) plus bias (F,).
    scratch: (2*th, 2*tw) in out's dtype."""
    _, filters, ho, wo = out.shape
    tiles = np.uint64(tw)
    r = np.empty((2, 4, tw), scratch.dtype)  # At m for one row of tiles: r[i, b] over the tiles
    for m in range(last - first):
        for f in range(filters):
            b = bias[f]
            for ty in range(th):
                base = np.uint64((m * th + ty) * tw)
                for col in range(4):  # r = At m: rows m0 + m1 + m2 and m1 - m2 - m3
                    r0, r1 = r[0, col], r[1, col]
                    m0, m1, m2, m3 = mm[col, f], mm[4 + col, f], mm[8 + col, f], mm[12 + col, f]
                    for tx in range(tiles):
                        t = base + tx
                        r0[tx] = m0[t] + m1[t] + m2[t]
                        r1[tx] = m1[t] - m2[t] - m3[t]
                for i in range(2):  # y = r At^T, plus the bias
                    y, ri0, ri1, ri2, ri3 = scratch[2 * ty + i], r[i, 0], r[i, 1], r[i, 2], r[i, 3]
                    for tx in range(tiles):
                        y[2 * tx] = ri0[tx] + ri1[tx] + ri2[tx] + b
                        y[2 * tx + 1] = ri1[tx] - ri2[tx] - ri3[tx] + b
            plane = out[first + m, f]
            for row in range(ho):
                plane[row] = scratch[row, :wo]


@numba.njit(nogil=True, cache=True)
def output_tiles_adjoint(dout, first, last, th, tw, scratch, dmm):
    """dmm (16, F, n*th*tw) <- the adjoint of `output_tiles` applied to dout[first:last] (N, F, Ho, Wo).
    scratch: (2*th, 2*tw) in dout's dtype; its rows and columns past Ho, Wo stay 0."""
    _, filters, ho, wo = dout.shape
    width = np.uint64(2 * tw)
    tiles = np.uint64(tw)
    q = np.empty((4, 2 * tw), scratch.dtype)  # At^T dy for one row of tiles
    scratch[:, :] = 0
    for m in range(last - first):
        for f in range(filters):
            plane = dout[first + m, f]
            for row in range(ho):
                scratch[row, :wo] = plane[row]
            for ty in range(th):
                g0, g1 = scratch[2 * ty], scratch[2 * ty + 1]
                q0, q1, q2, q3 = q[0], q[1], q[2], q[3]
                for s in range(width):  # q = At^T dy: rows dy0, dy0 + dy1, dy0 - dy1, -dy1
                    q0[s], q1[s], q2[s], q3[s] = g0[s], g0[s] + g1[s], g0[s] - g1[s], -g1[s]
                base = np.uint64((m * th + ty) * tw)
                for a in range(4):  # dM = q At: columns q0, q0 + q1, q0 - q1, -q1 of each tile
                    qa = q[a]
                    d0, d1, d2, d3 = dmm[4 * a, f], dmm[4 * a + 1, f], dmm[4 * a + 2, f], dmm[4 * a + 3, f]
                    for tx in range(tiles):
                        left, right = qa[2 * tx], qa[2 * tx + 1]
                        d0[base + tx] = left
                        d1[base + tx] = left + right
                        d2[base + tx] = left - right
                        d3[base + tx] = -right
