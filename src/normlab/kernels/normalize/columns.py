"""Batch norm of an (N, D) batch: one group per column d, over the N rows. Also the elementwise passes of
(N, C, S) batches with small planes, viewed as (N, C * S) with the per-channel values repeated over each
plane (`channels.py`).

The reductions run over a grid of (block of rows, tile of TILE columns) tasks, one accumulator per column
(lanes never meet, so no reassociation is needed to vectorize), ROWS_AT_ONCE rows per update, into per-block
partial arrays merged after the parallel loop. The elementwise passes take ROWS_AT_ONCE rows per task too,
so the per-column values are loaded once for all of them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab.kernels.normalize.common import JIT, PARALLEL
from normlab.kernels.normalize.elementwise import affine, centred, input_grad
from normlab.kernels.normalize.moments import chunk_moments

BLOCK_ROWS = 64  # fewest rows per block of the column reductions: each block pivots anew
TILE = 512  # columns per tile of the column reductions: two float64 accumulators fit in L1
ROWS_AT_ONCE = 4  # rows per pass over the per-column vectors: their loads are shared


@njit(**JIT)
def _tiles(columns):
    return (columns + TILE - 1) // TILE


@njit(**JIT)
def _block_and_tile(t, tiles, bounds, columns):
    """Task t of the (row block, column tile) grid: (block, first row, end row, first column, end column)."""
    b, j = t // tiles, t % tiles
    return b, bounds[b], bounds[b + 1], j * TILE, min((j + 1) * TILE, columns)


@njit(**PARALLEL)
def column_block_moments(x2, bounds, shift, m2):
    """Per block of rows of x2 (N, D) and per column d: mean - x2[0, d] and M2, into shift and m2
    (blocks, D), which start at zero. A block's shifted sums use its own first row as the pivot."""
    tiles = _tiles(x2.shape[1])
    for t in prange((bounds.shape[0] - 1) * tiles):
        b, lo, hi, d0, d1 = _block_and_tile(t, tiles, bounds, x2.shape[1])
        s, q = shift[b, d0:d1], m2[b, d0:d1]  # accumulate in place
        pivot, origin = x2[lo, d0:d1], x2[0, d0:d1]
        r = lo
        while r + ROWS_AT_ONCE <= hi:
            xa, xb, xc, xd = x2[r, d0:d1], x2[r + 1, d0:d1], x2[r + 2, d0:d1], x2[r + 3, d0:d1]
            for i in range(s.shape[0]):
                p = np.float64(pivot[i])
                da, db = np.float64(xa[i]) - p, np.float64(xb[i]) - p
                dc, dd = np.float64(xc[i]) - p, np.float64(xd[i]) - p
                s[i] += (da + db) + (dc + dd)
                q[i] += (da * da + db * db) + (dc * dc + dd * dd)
            r += ROWS_AT_ONCE
        for rest in range(r, hi):
            row = x2[rest, d0:d1]
            for i in range(s.shape[0]):
                d = np.float64(row[i]) - np.float64(pivot[i])
                s[i] += d
                q[i] += d * d
        k = hi - lo
        for i in range(s.shape[0]):
            block_shift, q[i] = chunk_moments(k, s[i], q[i])
            s[i] = (np.float64(pivot[i]) - np.float64(origin[i])) + block_shift


@njit(**PARALLEL)
def column_block_grad_sums(dout2, x2, pivot, shift, bounds, dout_sum, centered_sum):
    """Per block of rows and per column d: sum(dout) and sum(dout * (x - mean_d)), into dout_sum and
    centered_sum (blocks, D), which start at zero."""
    tiles = _tiles(x2.shape[1])
    for t in prange((bounds.shape[0] - 1) * tiles):
        b, lo, hi, d0, d1 = _block_and_tile(t, tiles, bounds, x2.shape[1])
        a, s = dout_sum[b, d0:d1], centered_sum[b, d0:d1]
        p, sh = pivot[d0:d1], shift[d0:d1]
        r = lo
        while r + ROWS_AT_ONCE <= hi:
            ga, gb, gc, gd = dout2[r, d0:d1], dout2[r + 1, d0:d1], dout2[r + 2, d0:d1], dout2[r + 3, d0:d1]
            xa, xb, xc, xd = x2[r, d0:d1], x2[r + 1, d0:d1], x2[r + 2, d0:d1], x2[r + 3, d0:d1]
            for i in range(a.shape[0]):
                pi, shi = np.float64(p[i]), sh[i]
                g0, g1, g2, g3 = np.float64(ga[i]), np.float64(gb[i]), np.float64(gc[i]), np.float64(gd[i])
                a[i] += (g0 + g1) + (g2 + g3)
                s[i] += (g0 * centred(xa[i], pi, shi) + g1 * centred(xb[i], pi, shi)) + (
                    g2 * centred(xc[i], pi, shi) + g3 * centred(xd[i], pi, shi))
            r += ROWS_AT_ONCE
        for rest in range(r, hi):
            g_row, x_row = dout2[rest, d0:d1], x2[rest, d0:d1]
            for i in range(a.shape[0]):
                g = np.float64(g_row[i])
                a[i] += g
                s[i] += g * centred(x_row[i], np.float64(p[i]), sh[i])


@njit(**JIT)
def _normalize_rows_of_columns(x2, r, rows, p, shift, rstd, gamma, beta, out2):
    """out = gamma * xhat + beta over `rows` (1 or ROWS_AT_ONCE) rows from row r: one group and gamma per
    column, whose values are loaded once for all the rows."""
    if rows == 1:
        x, out = x2[r], out2[r]
        for i in range(x.shape[0]):
            out[i] = affine(x[i], np.float64(p[i]), shift[i], rstd[i], gamma[i], beta[i])
        return
    xa, xb, xc, xd = x2[r], x2[r + 1], x2[r + 2], x2[r + 3]
    oa, ob, oc, od = out2[r], out2[r + 1], out2[r + 2], out2[r + 3]
    for i in range(xa.shape[0]):
        pi, sh, rs, g, b = np.float64(p[i]), shift[i], rstd[i], gamma[i], beta[i]
        oa[i] = affine(xa[i], pi, sh, rs, g, b)
        ob[i] = affine(xb[i], pi, sh, rs, g, b)
        oc[i] = affine(xc[i], pi, sh, rs, g, b)
        od[i] = affine(xd[i], pi, sh, rs, g, b)


@njit(**JIT)
def _input_grad_rows_of_columns(dout2, x2, r, rows, p, shift, rstd, gamma, mean_g, mean_gxhat, dx2):
    """dx over `rows` (1 or ROWS_AT_ONCE) rows from row r, the per-column values loaded once for all."""
    if rows == 1:
        x, dout, dx = x2[r], dout2[r], dx2[r]
        for i in range(x.shape[0]):
            dx[i] = input_grad(dout[i], x[i], np.float64(p[i]), shift[i], rstd[i], gamma[i], mean_g[i], mean_gxhat[i])
        return
    xa, xb, xc, xd = x2[r], x2[r + 1], x2[r + 2], x2[r + 3]
    ga, gb, gc, gd = dout2[r], dout2[r + 1], dout2[r + 2], dout2[r + 3]
    da, db, dc, dd = dx2[r], dx2[r + 1], dx2[r + 2], dx2[r + 3]
    for i in range(xa.shape[0]):
        pi, sh, rs, g, m1, m2 = np.float64(p[i]), shift[i], rstd[i], gamma[i], mean_g[i], mean_gxhat[i]
        da[i] = input_grad(ga[i], xa[i], pi, sh, rs, g, m1, m2)
        db[i] = input_grad(gb[i], xb[i], pi, sh, rs, g, m1, m2)
        dc[i] = input_grad(gc[i], xc[i], pi, sh, rs, g, m1, m2)
        dd[i] = input_grad(gd[i], xd[i], pi, sh, rs, g, m1, m2)


@njit(**PARALLEL)
def normalize_columns(x2, pivot, shift, rstd, gamma, beta, out2):
    """out2 = gamma * xhat + beta for x2 (N, D), one group per column: vectors (D,) of per-column values."""
    n_ = x2.shape[0]
    for step in prange((n_ + ROWS_AT_ONCE - 1) // ROWS_AT_ONCE):
        r = step * ROWS_AT_ONCE
        if r + ROWS_AT_ONCE <= n_:
            _normalize_rows_of_columns(x2, r, ROWS_AT_ONCE, pivot, shift, rstd, gamma, beta, out2)
        else:
            for rest in range(r, n_):
                _normalize_rows_of_columns(x2, rest, 1, pivot, shift, rstd, gamma, beta, out2)


@njit(**PARALLEL)
def input_grad_columns(dout2, x2, pivot, shift, rstd, gamma, mean_g, mean_gxhat, dx2):
    """dx2 for x2 (N, D), one group per column; mean_g and mean_gxhat (D,) per column."""
    n_ = x2.shape[0]
    for step in prange((n_ + ROWS_AT_ONCE - 1) // ROWS_AT_ONCE):
        r = step * ROWS_AT_ONCE
        if r + ROWS_AT_ONCE <= n_:
            _input_grad_rows_of_columns(dout2, x2, r, ROWS_AT_ONCE, pivot, shift, rstd, gamma, mean_g, mean_gxhat, dx2)
        else:
            for rest in range(r, n_):
                _input_grad_rows_of_columns(dout2, x2, rest, 1, pivot, shift, rstd, gamma, mean_g, mean_gxhat, dx2)
