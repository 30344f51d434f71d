"""The compiled (numba) twin of the normalization core, `normlab.functional.normalize`.

Same contract as `normalize` + `scale_shift` forward and `normalize_scale_shift_backward` backward, fused
and compiled for the two layouts every normalization in normlab reduces to:

- channels: x viewed as (N, C, S), one group per channel c over all n and s. Batch norm: S = H * W for
  (N, C, H, W), S = 1 for (N, D). gamma and beta are per channel, constant over the group.
- rows: x viewed as (R, K), one group per row. Layer norm: R = N, K = the features. Group norm: R = N * G,
  K = (C / G) * S. A row is made of K / channel_size channels of channel_size contiguous elements; row r
  uses gamma2[r % G] (shape (G, K / channel_size)), one value per channel.

Forward, for a group of M elements with pivot p (its first element, as `normalize` pivots):

    shift = mean(x - p)                          so mean = p + shift, exact for data far from zero
    var   = mean((x - p - shift)^2)
    rstd  = 1 / sqrt(var + eps)
    xhat  = ((x - p) - shift) * rstd
    out   = gamma * xhat + beta

The statistics take one pass over memory: every chunk (at most CHUNK elements, or a block of rows) gives
its count, mean and M2 from float64 sums of x minus a pivot, and the chunks merge with Chan's formula.
Nothing forms E[x^2] - E[x]^2 over the group, so a mean far from zero costs nothing: the shifted sums lose
only in proportion to how far the pivot lies from the mean, in standard deviations. x minus the pivot is
formed in x's dtype (exact within a factor of two of it, by Sterbenz) and summed in float64. The pivot is
the group's first element, shared by its chunks (a block of rows of an (N, D) batch pivots on its own
first row), and it is never loaded just before the loop that sums about it: a value fresh from memory that
every element waits for stalled each chunk by a memory latency (see `_normalize_rows_pipelined`).

Backward, with g = dout * gamma:

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))

as one reduction pass (sums of dout and of dout * xhat per group, and per parameter for dgamma and dbeta)
and one elementwise pass. xhat is never stored: it is recomputed from x, so a float32 batch norm forward
moves 12 bytes per element (read x twice, write out) and the backward 20 (read x and dout twice, write
dx). For rows (a group fits in cache) it is 8 and 12. The price: x must not change between the forward
and the backward.

Sums run in float64 whatever the input dtype; outputs are in the input's dtype. The work is parallel over
planes (n, c), rows or blocks of rows; the reductions of a block are written to partial arrays and
merged after, so the result does not depend on the thread count. Each call runs two parallel regions
(rows: one), the fewest that one statistics pass and one elementwise pass allow.

Rows with one gamma per element (layer norm's elementwise affine) do their elementwise work in x's
precision, around the row's mean rounded to it (`_working_centre`): in float32 that is twice float64's
vector width and no conversions, and xhat stays within a few float32 ulps of the exact value however far
the mean is from zero. Their row sums, and dgamma and dbeta, still add in float64. The forward sums row
r + 1 in the loop that writes row r's output (`_normalize_rows_pipelined`), so reads and writes stream
together as in a copy.

Channels by plane size S: S = 1 is an (N, D) batch, reduced by blocks of rows and column tiles. Small
planes (S <= SMALL_PLANE, a small CNN's 4x4 to 16x16 maps) are reduced by (block of images, channel): the
block's planes of that channel, at most CHUNK elements, form one chunk, so a plane of 16 values costs
neither a task nor a merge of its own (measured 2-3x faster forward than plane by plane on (128, 128, 4, 4));
their elementwise passes run one image per task, or for S <= COLUMN_PLANE as the (N, C * S) column kernels
with the per-channel values repeated over each plane. Larger planes go plane by plane, CHUNK at a time.

Threads: numba's "tbb" layer where the tbb package loads, else "workqueue", unless NUMBA_THREADING_LAYER
says otherwise (`normlab.kernels.backend.choose_threading_layer`, which says why), chosen on import here
too.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from normlab import memory
from normlab.kernels.backend import numba_available
from normlab.kernels.statistics import GroupStatistics

CHUNK = 4096  # elements per shifted-sum chunk: bounds the rounding of the one-pass sums
COLUMN_PLANE = 64  # (N, C, S) with S up to this: the elementwise passes run as (N, C * S) columns
SMALL_PLANE = 256  # (N, C, S) with S up to this: one task per (block of images, channel), not per plane
BLOCK_ROWS = 64  # fewest rows per block of the (N, D) column reductions: each block pivots anew
TILE = 512  # columns per tile of the (N, D) column reductions: two float64 accumulators fit in L1
ROWS_AT_ONCE = 4  # (N, D) rows per pass over the per-column vectors: their loads are shared
MAX_BLOCKS = 64  # row blocks whose partial sums are merged after the parallel loop
PIPELINE_BLOCKS = 16  # blocks of rows of the row-statistics forward; the results do not depend on it
ELEMENTS_PER_PARTIAL = 16  # at least this many input elements per partial sum: zeroing, writing and
#                            summing the partials stays a small fraction of the traffic

# Reductions may be reassociated so LLVM vectorizes them; elementwise kernels stay strict IEEE, which
# keeps ((x - p) - shift) from being rewritten as x - (p + shift). The reductions that form it too are
# held to the NumPy core by the tests on data whose mean is 1e6 standard deviations from zero.
REDUCE = {"reassoc", "contract"}
JIT = {"cache": True}
PARALLEL = {"cache": True, "parallel": True}

numba_available()  # chooses numba's threading layer, before any kernel can start its threads


# ---------------------------------------------------------------------------------------------------
# Statistics


@njit(fastmath=REDUCE, **JIT)
def _sums_about(seg, p):
    """(sum(x - p), sum((x - p)^2)) of a 1-D segment, summed in float64; p is one of its elements.

    x - p is formed in seg's dtype: exact for x within a factor of two of p (Sterbenz), otherwise within
    half an ulp of itself, the size of the spread; its float64 square is exact for float32 data. A float32
    loop so runs at float32's vector width (eight float32 lanes, the float64 sums in 512-bit registers),
    where converting each element first ran at float64's (four lanes)."""
    s = 0.0
    q = 0.0
    for i in range(seg.shape[0]):
        d = np.float64(seg[i] - p)
        s += d
        q += d * d
    return s, q


@njit(**JIT)
def statistics_size(pivot, shift, var):
    """max over groups of |pivot| + |shift| + sqrt(var): a bound on how far a group's values reach, read
    off the statistics (O(groups)) to tell data near the top of the dtype's range (see
    `normlab.functional.normalize.compiled_statistics_in_range`). NaN if any statistic is NaN."""
    size = 0.0
    for g in range(var.shape[0]):
        v = abs(np.float64(pivot[g])) + abs(shift[g]) + np.sqrt(var[g])
        if not v <= size:  # larger, or NaN: NaN stays
            size = v
            if np.isnan(v):
                return v
    return size


@njit(**JIT)
def _chunk_moments(count, s, q):
    """(mean - p, M2) of a chunk of `count` values from its sums about p: s = sum(x - p), q = sum((x - p)^2)."""
    shift = s / count
    return shift, q - s * shift


@njit(**JIT)
def _merge(n_a, shift_a, m2_a, n_b, shift_b, m2_b):
    """(count, mean, M2) of the union of two sets (Chan, Golub & LeVeque); means relative to one origin."""
    n = n_a + n_b
    delta = shift_b - shift_a
    return n, shift_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * (n_b / n))


@njit(**JIT)
def _segment_moments(seg, origin):
    """(count, mean - origin, M2) of a 1-D segment in one pass over memory, CHUNK elements at a time, each
    chunk summed about `origin` (a value in seg's dtype: its group's pivot)."""
    n, shift, m2 = 0.0, 0.0, 0.0
    for lo in range(0, seg.shape[0], CHUNK):
        chunk = seg[lo : lo + CHUNK]
        k = chunk.shape[0]
        s, q = _sums_about(chunk, origin)
        chunk_shift, chunk_m2 = _chunk_moments(k, s, q)
        n, shift, m2 = _merge(n, shift, m2, k, chunk_shift, chunk_m2)
    return n, shift, m2


@njit(**PARALLEL)
def _plane_moments(x3):
    """Per plane (n, c) of x3 (N, C, S): mean - pivot_c and M2, with pivot_c = x3[0, c, 0], which the planes
    of channel c sum about (after image 0, a line in cache: each plane pivoting on its own first element
    took 2.1 against 1.1 ms for (128, 64, 32, 32) on one thread, waiting for that element from memory)."""
    n_, c_, _ = x3.shape
    shift = np.empty((n_, c_))
    m2 = np.empty((n_, c_))
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        _, plane_shift, plane_m2 = _segment_moments(x3[n, c], x3[0, c, 0])
        shift[n, c], m2[n, c] = plane_shift, plane_m2
    return shift, m2


@njit(**PARALLEL)
def _image_block_moments(x3, bounds, shift, m2):
    """Per block of images and per channel c of x3 (N, C, S): mean - x3[0, c, 0] and M2, into shift and
    m2 (blocks, C). The block's planes of one channel (at most CHUNK elements) are one chunk, summed about
    the channel's pivot x3[0, c, 0]; one task per (block, channel), so a small plane costs no division or
    merge."""
    c_ = x3.shape[1]
    for t in prange((bounds.shape[0] - 1) * c_):
        b, c = t // c_, t % c_
        lo, hi = bounds[b], bounds[b + 1]
        p = x3[0, c, 0]
        s, q = 0.0, 0.0
        for n in range(lo, hi):
            plane_s, plane_q = _sums_about(x3[n, c], p)
            s += plane_s
            q += plane_q
        shift[b, c], m2[b, c] = _chunk_moments((hi - lo) * x3.shape[2], s, q)


@njit(**JIT)
def _tiles(columns):
    return (columns + TILE - 1) // TILE


@njit(**JIT)
def _block_and_tile(t, tiles, bounds, columns):
    """Task t of the (row block, column tile) grid: (block, first row, end row, first column, end column)."""
    b, j = t // tiles, t % tiles
    return b, bounds[b], bounds[b + 1], j * TILE, min((j + 1) * TILE, columns)


@njit(**PARALLEL)
def _column_block_moments(x2, bounds, shift, m2):
    """Per block of rows of x2 (N, D) and per column d: mean - x2[0, d] and M2, into shift and m2
    (blocks, D), which start at zero.

    Rows are streamed with one accumulator per column (lanes never meet, so no reassociation is needed
    to vectorize), ROWS_AT_ONCE rows per update of the accumulators; a block's shifted sums use its own
    first row as the pivot.
    """
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
            block_shift, q[i] = _chunk_moments(k, s[i], q[i])
            s[i] = (np.float64(pivot[i]) - np.float64(origin[i])) + block_shift


@njit(**JIT)
def _merge_blocks(counts, shift, m2):
    """Merge per-block (count, shift, M2) into one mean - origin and variance per column. Serial, and
    vectorized across columns: a parallel region costs more than this."""
    blocks, c_ = shift.shape
    n = np.zeros(c_)
    group_shift = np.zeros(c_)
    group_m2 = np.zeros(c_)
    for b in range(blocks):
        for c in range(c_):
            merged = _merge(n[c], group_shift[c], group_m2[c], counts[b], shift[b, c], m2[b, c])
            n[c], group_shift[c], group_m2[c] = merged
    return group_shift, group_m2 / n


# ---------------------------------------------------------------------------------------------------
# Elementwise: out = gamma * xhat + beta and dx = rstd * (g - mean(g) - xhat * mean(g * xhat))


@njit(**JIT)
def _normalize_segment(x, p, shift, rstd, gamma, beta, out):
    """out = gamma * xhat + beta over a segment of one group and one gamma."""
    for i in range(x.shape[0]):
        xhat = ((np.float64(x[i]) - p) - shift) * rstd
        out[i] = gamma * xhat + beta


@njit(**JIT)
def _working_centre(x, p, shift, rstd):
    """(c, rstd, shift) in x's dtype for xhat = (x - c) * rstd + shift, formed in that precision, of a row
    whose mean is p + shift (its statistics' pivot and shift).

    c is the mean rounded to x's dtype; the returned shift = -(mean - c) * rstd carries the part of the mean
    below c's last digit (for float64 the rounding error of p + shift itself, from Knuth's two-sum). x - c
    is exact for x within a factor of two of c (Sterbenz) and otherwise within an ulp of itself, so xhat
    stays within a few ulps (of x's precision) of the exact value however far the mean is from zero."""
    mean = p + shift
    tail = p - (mean - (mean - p)) + (shift - (mean - p))  # p + shift - mean, exactly
    c = x.dtype.type(mean)
    below = (mean - np.float64(c)) + tail  # mean - c: exact (Sterbenz) plus the tail
    return c, x.dtype.type(rstd), x.dtype.type(-below * rstd)


@njit(fastmath={"contract"}, **JIT)
def _normalize_row_working(x, c, rstd, shift, gamma, beta, out):
    """out = gamma * xhat + beta over one row with one gamma per element, every operand in x's precision
    (`_working_centre`). In float32 that is twice float64's vector width, and no conversions."""
    for i in range(x.shape[0]):
        out[i] = gamma[i] * ((x[i] - c) * rstd + shift) + beta[i]


@njit(fastmath=REDUCE, **JIT)
def _normalize_row_and_sum_next(x, c, rstd, shift, gamma, beta, out, nxt, p):
    """`_normalize_row_working` over row x, and in the same loop `_sums_about(nxt, p)` of the next row:
    the loop reads the next row from memory while it writes this one's output, as a copy does, where
    summing a row and then writing it left the reads and the writes each waiting in turn."""
    s = 0.0
    q = 0.0
    for i in range(x.shape[0]):
        out[i] = gamma[i] * ((x[i] - c) * rstd + shift) + beta[i]
        d = np.float64(nxt[i] - p)
        s += d
        q += d * d
    return s, q


@njit(**JIT)
def _normalize_row_elementwise(x, p, shift, rstd, gamma, beta, out):
    """out = gamma * xhat + beta over one group (a row) with one gamma per element."""
    for i in range(x.shape[0]):
        xhat = ((np.float64(x[i]) - p) - shift) * rstd
        out[i] = gamma[i] * xhat + beta[i]


@njit(**JIT)
def _normalize_rows_of_columns(x2, r, rows, p, shift, rstd, gamma, beta, out2):
    """out = gamma * xhat + beta over `rows` (1 or ROWS_AT_ONCE) rows of an (N, D) batch from row r:
    one group and gamma per column, whose statistics are loaded once for all the rows."""
    if rows == 1:
        x, out = x2[r], out2[r]
        for i in range(x.shape[0]):
            xhat = ((np.float64(x[i]) - np.float64(p[i])) - shift[i]) * rstd[i]
            out[i] = gamma[i] * xhat + beta[i]
        return
    xa, xb, xc, xd = x2[r], x2[r + 1], x2[r + 2], x2[r + 3]
    oa, ob, oc, od = out2[r], out2[r + 1], out2[r + 2], out2[r + 3]
    for i in range(xa.shape[0]):
        pi, sh, rs, g, b = np.float64(p[i]), shift[i], rstd[i], gamma[i], beta[i]
        oa[i] = g * (((np.float64(xa[i]) - pi) - sh) * rs) + b
        ob[i] = g * (((np.float64(xb[i]) - pi) - sh) * rs) + b
        oc[i] = g * (((np.float64(xc[i]) - pi) - sh) * rs) + b
        od[i] = g * (((np.float64(xd[i]) - pi) - sh) * rs) + b


@njit(**JIT)
def _input_grad_segment(dout, x, p, shift, rstd, gamma, mean_g, mean_gxhat, dx):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gamma * dout, over a segment of one gamma."""
    for i in range(x.shape[0]):
        xhat = ((np.float64(x[i]) - p) - shift) * rstd
        dx[i] = rstd * (gamma * np.float64(dout[i]) - mean_g - xhat * mean_gxhat)


@njit(fastmath={"contract"}, **JIT)
def _input_grad_row_working(dout, x, c, a, b, e, gamma, dx):
    """dx = a * gamma * dout + b * (x - c) + e over one row, in x's precision: with xhat = (x - c) * rstd
    + shift (`_working_centre`), a = rstd, b = -rstd^2 * mean(g * xhat) and
    e = -rstd * (mean(g) + mean(g * xhat) * shift) this is rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    for i in range(x.shape[0]):
        dx[i] = a * (gamma[i] * dout[i]) + (b * (x[i] - c) + e)


@njit(**JIT)
def _input_grad_rows_of_columns(dout2, x2, r, rows, p, shift, rstd, gamma, mean_g, mean_gxhat, dx2):
    """dx over `rows` (1 or ROWS_AT_ONCE) rows of an (N, D) batch from row r: one group per column, its
    values (vectors of per-column values) loaded once for all the rows."""
    if rows == 1:
        x, dout, dx = x2[r], dout2[r], dx2[r]
        for i in range(x.shape[0]):
            xhat = ((np.float64(x[i]) - np.float64(p[i])) - shift[i]) * rstd[i]
            dx[i] = rstd[i] * (gamma[i] * np.float64(dout[i]) - mean_g[i] - xhat * mean_gxhat[i])
        return
    xa, xb, xc, xd = x2[r], x2[r + 1], x2[r + 2], x2[r + 3]
    ga, gb, gc, gd = dout2[r], dout2[r + 1], dout2[r + 2], dout2[r + 3]
    da, db, dc, dd = dx2[r], dx2[r + 1], dx2[r + 2], dx2[r + 3]
    for i in range(xa.shape[0]):
        pi, sh, rs, g, m1, m2 = np.float64(p[i]), shift[i], rstd[i], gamma[i], mean_g[i], mean_gxhat[i]
        da[i] = rs * (g * np.float64(ga[i]) - m1 - ((np.float64(xa[i]) - pi) - sh) * rs * m2)
        db[i] = rs * (g * np.float64(gb[i]) - m1 - ((np.float64(xb[i]) - pi) - sh) * rs * m2)
        dc[i] = rs * (g * np.float64(gc[i]) - m1 - ((np.float64(xc[i]) - pi) - sh) * rs * m2)
        dd[i] = rs * (g * np.float64(gd[i]) - m1 - ((np.float64(xd[i]) - pi) - sh) * rs * m2)


# ---------------------------------------------------------------------------------------------------
# Reductions of the backward: sum(dout) and sum(dout * xhat) / rstd


@njit(fastmath=REDUCE, **JIT)
def _grad_sums(dout, x, p, shift):
    """(sum(dout), sum(dout * (x - p - shift))) over a segment, in float64."""
    a = 0.0
    b = 0.0
    for i in range(x.shape[0]):
        g = np.float64(dout[i])
        a += g
        b += g * ((np.float64(x[i]) - p) - shift)
    return a, b


@njit(**PARALLEL)
def _plane_grad_sums(dout3, x3, pivot, shift):
    """Per plane (n, c): sum(dout) and sum(dout * (x - mean_c))."""
    n_, c_, _ = x3.shape
    dout_sum = np.empty((n_, c_))
    centered_sum = np.empty((n_, c_))
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        a, b = _grad_sums(dout3[n, c], x3[n, c], np.float64(pivot[c]), shift[c])
        dout_sum[n, c], centered_sum[n, c] = a, b
    return dout_sum, centered_sum


@njit(**PARALLEL)
def _image_block_grad_sums(dout3, x3, pivot, shift, bounds, dout_sum, centered_sum):
    """Per block of images and per channel: sum(dout) and sum(dout * (x - mean_c)), into dout_sum and
    centered_sum (blocks, C); one task per (block, channel), as `_image_block_moments`."""
    c_ = x3.shape[1]
    for t in prange((bounds.shape[0] - 1) * c_):
        b, c = t // c_, t % c_
        p, sh = np.float64(pivot[c]), shift[c]
        a, s = 0.0, 0.0
        for n in range(bounds[b], bounds[b + 1]):
            plane_a, plane_s = _grad_sums(dout3[n, c], x3[n, c], p, sh)
            a += plane_a
            s += plane_s
        dout_sum[b, c], centered_sum[b, c] = a, s


@njit(**PARALLEL)
def _column_block_grad_sums(dout2, x2, pivot, shift, bounds, dout_sum, centered_sum):
    """Per block of rows and per column d: sum(dout) and sum(dout * (x - mean_d)), into dout_sum and
    centered_sum (blocks, D), which start at zero; ROWS_AT_ONCE rows per update."""
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
                s[i] += (g0 * ((np.float64(xa[i]) - pi) - shi) + g1 * ((np.float64(xb[i]) - pi) - shi)) + (
                    g2 * ((np.float64(xc[i]) - pi) - shi) + g3 * ((np.float64(xd[i]) - pi) - shi))
            r += ROWS_AT_ONCE
        for rest in range(r, hi):
            g_row, x_row = dout2[rest, d0:d1], x2[rest, d0:d1]
            for i in range(a.shape[0]):
                g = np.float64(g_row[i])
                a[i] += g
                s[i] += g * ((np.float64(x_row[i]) - np.float64(p[i])) - sh[i])


@njit(fastmath=REDUCE, **JIT)
def _row_grad_sums_working(dout, x, c, rstd, shift, gamma, dgamma, dbeta):
    """One row with one gamma per element: returns (sum(g), sum(g * xhat)) summed in float64, g = gamma *
    dout and xhat formed in x's precision (`_working_centre`), and adds dout * xhat and dout to the float64
    partial sums dgamma and dbeta. (Float32 partials flushed to float64 every 8 rows were 3% faster on one
    thread, 6% slower on two, and lost up to 4e-6 of dbeta where dout cancels over few rows.)"""
    sum_g = 0.0
    sum_gxhat = 0.0
    for i in range(x.shape[0]):
        d = dout[i]
        xhat = (x[i] - c) * rstd + shift
        g = gamma[i] * d
        dgamma[i] += np.float64(d * xhat)
        dbeta[i] += np.float64(d)
        sum_g += np.float64(g)
        sum_gxhat += np.float64(g * xhat)
    return sum_g, sum_gxhat


# ---------------------------------------------------------------------------------------------------
# Parallel kernels


@njit(**PARALLEL)
def _normalize_planes(x3, pivot, shift, rstd, gamma, beta, out3):
    n_, c_, _ = x3.shape
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        _normalize_segment(x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], beta[c], out3[n, c])


@njit(**PARALLEL)
def _normalize_images(x3, pivot, shift, rstd, gamma, beta, out3):
    """`_normalize_planes` one image (its C planes) per iteration: for small planes, where a division per
    plane to find (n, c) costs as much as the plane."""
    for n in prange(x3.shape[0]):
        for c in range(x3.shape[1]):
            _normalize_segment(x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], beta[c], out3[n, c])


@njit(**PARALLEL)
def _normalize_columns(x2, pivot, shift, rstd, gamma, beta, out2):
    n_ = x2.shape[0]
    steps = (n_ + ROWS_AT_ONCE - 1) // ROWS_AT_ONCE
    for step in prange(steps):
        r = step * ROWS_AT_ONCE
        if r + ROWS_AT_ONCE <= n_:
            _normalize_rows_of_columns(x2, r, ROWS_AT_ONCE, pivot, shift, rstd, gamma, beta, out2)
        else:
            for rest in range(r, n_):
                _normalize_rows_of_columns(x2, rest, 1, pivot, shift, rstd, gamma, beta, out2)


@njit(**PARALLEL)
def _input_grad_planes(dout3, x3, pivot, shift, rstd, gamma, dout_sum, centered_sum, dx3):
    n_, c_, s_ = x3.shape
    m = n_ * s_
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        mean_g = gamma[c] * dout_sum[c] / m
        mean_gxhat = gamma[c] * centered_sum[c] * rstd[c] / m
        _input_grad_segment(
            dout3[n, c], x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], mean_g, mean_gxhat, dx3[n, c]
        )


@njit(**PARALLEL)
def _input_grad_images(dout3, x3, pivot, shift, rstd, gamma, dout_sum, centered_sum, dx3):
    """`_input_grad_planes` one image per iteration, as `_normalize_images`."""
    m = x3.shape[0] * x3.shape[2]
    for n in prange(x3.shape[0]):
        for c in range(x3.shape[1]):
            mean_g = gamma[c] * dout_sum[c] / m
            mean_gxhat = gamma[c] * centered_sum[c] * rstd[c] / m
            _input_grad_segment(dout3[n, c], x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], mean_g,
                                mean_gxhat, dx3[n, c])


@njit(**PARALLEL)
def _input_grad_columns(dout2, x2, pivot, shift, rstd, gamma, mean_g, mean_gxhat, dx2):
    n_ = x2.shape[0]
    steps = (n_ + ROWS_AT_ONCE - 1) // ROWS_AT_ONCE
    for step in prange(steps):
        r = step * ROWS_AT_ONCE
        if r + ROWS_AT_ONCE <= n_:
            _input_grad_rows_of_columns(dout2, x2, r, ROWS_AT_ONCE, pivot, shift, rstd, gamma, mean_g, mean_gxhat, dx2)
        else:
            for rest in range(r, n_):
                _input_grad_rows_of_columns(dout2, x2, rest, 1, pivot, shift, rstd, gamma, mean_g, mean_gxhat, dx2)


@njit(**JIT)
def _normalize_row(x, p, shift, rstd, gamma, beta, channel_size, out):
    """out = gamma * xhat + beta over one row; gamma and beta have one value per channel of the row."""
    if channel_size == 1:
        _normalize_row_elementwise(x, p, shift, rstd, gamma, beta, out)
        return
    for j in range(gamma.shape[0]):
        lo, hi = j * channel_size, (j + 1) * channel_size
        _normalize_segment(x[lo:hi], p, shift, rstd, gamma[j], beta[j], out[lo:hi])


@njit(**JIT)
def _normalize_rows_pipelined(x2, gamma2, beta2, eps, lo, hi, pivot, shift, var, rstd, out2):
    """Rows lo..hi-1 of x2 (R, K) with one gamma per element and K <= CHUNK (each row one chunk of
    `_segment_moments`, whose statistics these equal exactly): the sums of row r + 1 are taken in the loop
    that writes row r's output (`_normalize_row_and_sum_next`). Measured: (8192, 768) float32 in 1.0-1.07
    against 1.17-1.31 ms one row after the other.

    Each row's pivot (its first element) is loaded two rows before the loop that sums about it: loaded
    just before, it was a miss to memory that the whole loop waited on, once per row, wherever the
    hardware prefetcher had not fetched that line yet (rows starting in the first 32 bytes of a 256-byte
    block, as NumPy's arrays at 16 bytes past a page do: their row sums took 1.53-1.58 against 0.72-0.76 ms
    on one thread; one row ahead was not enough)."""
    k = x2.shape[1]
    groups = gamma2.shape[0]
    last = hi - 1
    p = x2[lo, 0]  # pivot of row r
    p_next = x2[min(lo + 1, last), 0]  # of row r + 1
    s, q = _sums_about(x2[lo], p)
    for r in range(lo, hi):
        p_after = x2[min(r + 2, last), 0]  # of row r + 2, two rows ahead of its use
        pivot[r] = p
        shift[r], m2 = _chunk_moments(k, s, q)
        var[r] = m2 / k
        rstd[r] = 1.0 / np.sqrt(var[r] + eps)
        row = x2[r]
        c, rs, sh = _working_centre(row, np.float64(p), shift[r], rstd[r])
        g = r % groups
        if r < last:
            s, q = _normalize_row_and_sum_next(row, c, rs, sh, gamma2[g], beta2[g], out2[r], x2[r + 1], p_next)
        else:
            _normalize_row_working(row, c, rs, sh, gamma2[g], beta2[g], out2[r])
        p, p_next = p_next, p_after


@njit(**PARALLEL)
def _normalize_rows(x2, gamma2, beta2, channel_size, eps, out2):
    """Statistics of every row and out = gamma * xhat + beta, the row read from memory once.

    With one gamma per element (channel_size 1: layer norm's elementwise affine, and group or instance norm
    whose channels hold one value each) gamma2 and beta2 come in x2's dtype and the output is formed in
    that precision (`_normalize_row_working`), rows of at most CHUNK elements pipelined
    (`_normalize_rows_pipelined`); otherwise in float64. Parallel over PIPELINE_BLOCKS blocks of rows."""
    r_, k = x2.shape
    groups = gamma2.shape[0]
    pivot = np.empty(r_, x2.dtype)
    shift = np.empty(r_)
    var = np.empty(r_)
    rstd = np.empty(r_)
    blocks = min(r_, PIPELINE_BLOCKS)
    for b in prange(blocks):
        lo, hi = b * r_ // blocks, (b + 1) * r_ // blocks
        if channel_size == 1 and k <= CHUNK:
            _normalize_rows_pipelined(x2, gamma2, beta2, eps, lo, hi, pivot, shift, var, rstd, out2)
            continue
        p, p_next = x2[lo, 0], x2[min(lo + 1, hi - 1), 0]  # pivots loaded two rows ahead of their use
        for r in range(lo, hi):
            p_after = x2[min(r + 2, hi - 1), 0]
            row = x2[r]
            pivot[r] = p
            n, row_shift, m2 = _segment_moments(row, p)
            shift[r], var[r] = row_shift, m2 / n
            rstd[r] = 1.0 / np.sqrt(var[r] + eps)
            g = r % groups
            if channel_size == 1:
                c, rs, sh = _working_centre(row, np.float64(p), row_shift, rstd[r])
                _normalize_row_working(row, c, rs, sh, gamma2[g], beta2[g], out2[r])
            else:
                _normalize_row(row, np.float64(p), shift[r], rstd[r], gamma2[g], beta2[g], channel_size, out2[r])
            p, p_next = p_next, p_after
    return pivot, shift, var, rstd


@njit(**PARALLEL)
def _apply_rows(x2, pivot, shift, rstd, gamma2, beta2, channel_size, out2):
    """out = gamma * xhat + beta with known statistics (recomputes xhat for a cache)."""
    groups = gamma2.shape[0]
    for r in prange(x2.shape[0]):
        g = r % groups
        _normalize_row(x2[r], np.float64(pivot[r]), shift[r], rstd[r], gamma2[g], beta2[g], channel_size, out2[r])


@njit(**PARALLEL)
def _input_grad_rows(dout2, x2, pivot, shift, rstd, gamma2, channel_size, bounds, dx2, partials):
    """dx of every row, for channels of channel_size > 1 elements, and returns (dgamma, dbeta) (G, K /
    channel_size): the sums of dout * xhat and dout per parameter, taken per block of rows into
    `partials` (2, blocks, G, K / channel_size), any contents, and then added in block order. Each row is
    read from memory once; its second pass runs from cache."""
    groups = gamma2.shape[0]
    k = x2.shape[1]
    dgamma, dbeta = partials[0], partials[1]
    for b in prange(bounds.shape[0] - 1):
        dgamma[b] = 0.0
        dbeta[b] = 0.0
        for r in range(bounds[b], bounds[b + 1]):
            g = r % groups
            x, dout, gamma, dx = x2[r], dout2[r], gamma2[g], dx2[r]
            p, sh, rs = np.float64(pivot[r]), shift[r], rstd[r]
            sum_g, sum_gxhat = 0.0, 0.0
            for j in range(gamma.shape[0]):
                lo, hi = j * channel_size, (j + 1) * channel_size
                dout_sum, centered_sum = _grad_sums(dout[lo:hi], x[lo:hi], p, sh)
                dgamma[b, g, j] += centered_sum * rs
                dbeta[b, g, j] += dout_sum
                sum_g += gamma[j] * dout_sum
                sum_gxhat += gamma[j] * centered_sum * rs
            for j in range(gamma.shape[0]):
                lo, hi = j * channel_size, (j + 1) * channel_size
                _input_grad_segment(dout[lo:hi], x[lo:hi], p, sh, rs, gamma[j], sum_g / k, sum_gxhat / k, dx[lo:hi])
    return _sum_blocks(dgamma), _sum_blocks(dbeta)


@njit(**PARALLEL)
def _input_grad_rows_working(dout2, x2, pivot, shift, rstd, gamma2, bounds, dx2, partials):
    """`_input_grad_rows` for one gamma per element (channel_size 1: layer norm), the elementwise work in
    x's precision with gamma2 (G, K) in x's dtype; the row sums and the block partials of dgamma and dbeta
    (partials: (2, blocks, G, K)) in float64."""
    groups, k = gamma2.shape
    dgamma, dbeta = partials[0], partials[1]
    for b in prange(bounds.shape[0] - 1):
        dgamma[b] = 0.0
        dbeta[b] = 0.0
        for r in range(bounds[b], bounds[b + 1]):
            g = r % groups
            x, dout, gamma = x2[r], dout2[r], gamma2[g]
            rs = rstd[r]
            c, rs_w, sh_w = _working_centre(x, np.float64(pivot[r]), shift[r], rs)
            sum_g, sum_gxhat = _row_grad_sums_working(dout, x, c, rs_w, sh_w, gamma, dgamma[b, g], dbeta[b, g])
            mean_g, mean_gxhat = sum_g / k, sum_gxhat / k
            t = x.dtype.type
            _input_grad_row_working(dout, x, c, rs_w, t(-rs * rs * mean_gxhat),
                                    t(-rs * (mean_g + mean_gxhat * np.float64(sh_w))), gamma, dx2[r])
    return _sum_blocks(dgamma), _sum_blocks(dbeta)


@njit(**JIT)
def _sum_blocks(partials):
    """(G, P) sum over the blocks of (blocks, G, P) partial sums, added in block order (as NumPy's
    sum(axis=0)). In the kernel, with the zeroing: from Python, they cost ~40 us of cold-cache interpreter
    time per call."""
    total = partials[0].copy()
    for b in range(1, partials.shape[0]):
        total += partials[b]
    return total


# ---------------------------------------------------------------------------------------------------
# Python entry points


@functools.lru_cache(maxsize=64)
def _row_blocks(rows: int, partials_per_block: int, elements: int, min_rows: int = 1) -> np.ndarray:
    """Bounds of the row blocks whose partial sums are merged after a parallel loop: at most MAX_BLOCKS,
    at least `min_rows` rows each where there are enough, and ELEMENTS_PER_PARTIAL input elements per
    partial sum (so a (64, 8192) layer norm gets 4 blocks, not 64 with as many partials as inputs).
    Cached (read-only): np.linspace took ~20 us per call after a kernel had left the caches cold."""
    by_traffic = elements // (ELEMENTS_PER_PARTIAL * max(partials_per_block, 1))
    blocks = min(MAX_BLOCKS, max(1, rows // min_rows), max(1, by_traffic))
    bounds = np.linspace(0, rows, blocks + 1).astype(np.int64)  # (blocks + 1,)
    bounds.setflags(write=False)
    return bounds


@functools.lru_cache(maxsize=64)
def _image_blocks(images: int, plane: int) -> np.ndarray:
    """Bounds of the blocks of images whose planes of one channel form one chunk: as few as hold at most
    CHUNK elements each, of near equal size. They depend on the shape only, never on the thread count.
    Cached (read-only): computing them took 4 us of a 100 us layer."""
    blocks = -(-images // max(1, CHUNK // plane))
    bounds = np.linspace(0, images, blocks + 1).astype(np.int64)  # (blocks + 1,)
    bounds.setflags(write=False)
    return bounds


def _per_column(plane: int, *per_channel: np.ndarray) -> list[np.ndarray]:
    """Per-channel vectors (C,) repeated over each channel's plane (C * plane,): the (N, D) kernels'
    operands for an (N, C, S) batch viewed as (N, C * S)."""
    return [np.repeat(v, plane) for v in per_channel]


def _finish(var: np.ndarray, eps: float) -> np.ndarray:
    return 1.0 / np.sqrt(var + eps)  # rstd, float64


def _contiguous(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(a) for a in arrays]


def _params(*arrays: np.ndarray) -> list[np.ndarray]:
    """gamma and beta as the kernels take them: contiguous float64 (a copy of C or G * C values)."""
    return [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]


def normalize_channels(
    x3: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
) -> tuple[np.ndarray, GroupStatistics]:
    """Batch norm forward in training: statistics per channel over N and S, then the affine.

    Inputs:
    - x3: (N, C, S) float32 or float64.
    - gamma, beta: (C,).
    - eps: added to the variance.

    Returns (out3 (N, C, S) in x3's dtype, GroupStatistics with one group per channel).
    """
    (x3,), (gamma, beta) = _contiguous(x3), _params(gamma, beta)
    n, c, s = x3.shape
    out3 = memory.empty_like(x3)
    if s == 1:
        x2, out2 = x3.reshape(n, c), out3.reshape(n, c)
        bounds = _row_blocks(n, c, x3.size, BLOCK_ROWS)
        shift, m2 = np.zeros((len(bounds) - 1, c)), np.zeros((len(bounds) - 1, c))  # per block of rows
        _column_block_moments(x2, bounds, shift, m2)
        shift, var = _merge_blocks(np.diff(bounds).astype(np.float64), shift, m2)
        stats = GroupStatistics(x2[0].copy(), shift, var, _finish(var, eps))
        _normalize_columns(x2, stats.pivot, shift, stats.rstd, gamma, beta, out2)
    elif s <= SMALL_PLANE:
        bounds = _image_blocks(n, s)
        shift, m2 = np.empty((len(bounds) - 1, c)), np.empty((len(bounds) - 1, c))  # per block of images
        _image_block_moments(x3, bounds, shift, m2)
        shift, var = _merge_blocks(np.diff(bounds) * float(s), shift, m2)
        stats = GroupStatistics(x3[0, :, 0].copy(), shift, var, _finish(var, eps))
        if s <= COLUMN_PLANE:
            _normalize_columns(x3.reshape(n, c * s), *_per_column(s, stats.pivot, shift, stats.rstd, gamma, beta),
                               out3.reshape(n, c * s))
        else:
            _normalize_images(x3, stats.pivot, shift, stats.rstd, gamma, beta, out3)
    else:
        shift, m2 = _plane_moments(x3)
        shift, var = _merge_blocks(np.full(n, float(s)), shift, m2)
        stats = GroupStatistics(x3[0, :, 0].copy(), shift, var, _finish(var, eps))
        _normalize_planes(x3, stats.pivot, shift, stats.rstd, gamma, beta, out3)
    return out3, stats


def normalized_channels(x3: np.ndarray, stats: GroupStatistics) -> np.ndarray:
    """xhat (N, C, S) recomputed from x3 and the forward's statistics, exactly as the forward formed it."""
    (x3,) = _contiguous(x3)
    ones, zeros = np.ones(x3.shape[1]), np.zeros(x3.shape[1])
    xhat = np.empty_like(x3)
    n, c, s = x3.shape
    if s == 1:
        _normalize_columns(x3.reshape(n, c), stats.pivot, stats.shift, stats.rstd, ones, zeros, xhat.reshape(n, c))
    elif s <= SMALL_PLANE:
        _normalize_images(x3, stats.pivot, stats.shift, stats.rstd, ones, zeros, xhat)
    else:
        _normalize_planes(x3, stats.pivot, stats.shift, stats.rstd, ones, zeros, xhat)
    return xhat


def normalize_channels_backward(
    dout3: np.ndarray, x3: np.ndarray, stats: GroupStatistics, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch norm backward in training. dout3 and x3: (N, C, S) of one dtype; gamma: (C,).
    Returns (dx3 in x3's dtype, dgamma (C,), dbeta (C,) in float64)."""
    (dout3, x3), (gamma,) = _contiguous(dout3, x3), _params(gamma)
    n, c, s = x3.shape
    dx3 = memory.empty_like(x3)
    if s == 1:
        x2, dout2, dx2 = x3.reshape(n, c), dout3.reshape(n, c), dx3.reshape(n, c)
        bounds = _row_blocks(n, c, x3.size, BLOCK_ROWS)
        dout_sum, centered_sum = np.zeros((len(bounds) - 1, c)), np.zeros((len(bounds) - 1, c))  # per block
        _column_block_grad_sums(dout2, x2, stats.pivot, stats.shift, bounds, dout_sum, centered_sum)
        dout_sum, centered_sum = dout_sum.sum(axis=0), centered_sum.sum(axis=0)
        mean_g, mean_gxhat = gamma * dout_sum / n, gamma * centered_sum * stats.rstd / n  # (C,) each
        _input_grad_columns(dout2, x2, stats.pivot, stats.shift, stats.rstd, gamma, mean_g, mean_gxhat, dx2)
    elif s <= SMALL_PLANE:
        bounds = _image_blocks(n, s)
        dout_sum, centered_sum = np.empty((len(bounds) - 1, c)), np.empty((len(bounds) - 1, c))  # per block
        _image_block_grad_sums(dout3, x3, stats.pivot, stats.shift, bounds, dout_sum, centered_sum)
        dout_sum, centered_sum = dout_sum.sum(axis=0), centered_sum.sum(axis=0)
        if s <= COLUMN_PLANE:
            mean_g, mean_gxhat = gamma * dout_sum / (n * s), gamma * centered_sum * stats.rstd / (n * s)  # (C,) each
            _input_grad_columns(dout3.reshape(n, c * s), x3.reshape(n, c * s),
                                *_per_column(s, stats.pivot, stats.shift, stats.rstd, gamma, mean_g, mean_gxhat),
                                dx3.reshape(n, c * s))
        else:
            _input_grad_images(dout3, x3, stats.pivot, stats.shift, stats.rstd, gamma, dout_sum, centered_sum, dx3)
    else:
        dout_sum, centered_sum = _plane_grad_sums(dout3, x3, stats.pivot, stats.shift)
        dout_sum, centered_sum = dout_sum.sum(axis=0), centered_sum.sum(axis=0)
        _input_grad_planes(dout3, x3, stats.pivot, stats.shift, stats.rstd, gamma, dout_sum, centered_sum, dx3)
    return dx3, centered_sum * stats.rstd, dout_sum  # dgamma = sum(dout * xhat), dbeta = sum(dout)


def normalize_rows(
    x2: np.ndarray, gamma2: np.ndarray, beta2: np.ndarray, channel_size: int, eps: float
) -> tuple[np.ndarray, GroupStatistics]:
    """Layer / group / instance norm forward: statistics per row, then the affine.

    Inputs:
    - x2: (R, K) float32 or float64.
    - gamma2, beta2: (G, K // channel_size); row r uses gamma2[r % G].
    - channel_size: contiguous elements that share one gamma (1 for layer norm's elementwise affine).
    - eps: added to the variance.

    Returns (out2 (R, K) in x2's dtype, GroupStatistics with one group per row).
    """
    (x2,) = _contiguous(x2)
    if channel_size == 1:  # one gamma per element: the output is formed in x2's precision
        gamma2, beta2 = (np.ascontiguousarray(a, dtype=x2.dtype) for a in (gamma2, beta2))
    else:
        gamma2, beta2 = _params(gamma2, beta2)
    out2 = memory.empty_like(x2)
    pivot, shift, var, rstd = _normalize_rows(x2, gamma2, beta2, channel_size, eps, out2)
    return out2, GroupStatistics(pivot, shift, var, rstd)


def normalized_rows(x2: np.ndarray, stats: GroupStatistics) -> np.ndarray:
    """xhat (R, K) recomputed from x2 and the forward's statistics, in float64 and then rounded to x2's
    dtype. For channel_size > 1 that is exactly the xhat the forward formed; with one gamma per element the
    forward formed it in x2's precision (`_normalize_row_working`), within a few ulps of this."""
    (x2,) = _contiguous(x2)
    xhat = np.empty_like(x2)
    ones, zeros = np.ones((1, x2.shape[1])), np.zeros((1, x2.shape[1]))
    _apply_rows(x2, stats.pivot, stats.shift, stats.rstd, ones, zeros, 1, xhat)
    return xhat


def normalize_rows_backward(
    dout2: np.ndarray, x2: np.ndarray, stats: GroupStatistics, gamma2: np.ndarray, channel_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer / group / instance norm backward. dout2, x2: (R, K) of one dtype; gamma2: (G, K // channel_size).
    Returns (dx2 in x2's dtype, dgamma2 and dbeta2 shaped like gamma2, in float64)."""
    dout2, x2 = _contiguous(dout2, x2)
    r, _ = x2.shape
    dx2 = memory.empty_like(x2)
    bounds = _row_blocks(r, gamma2.size, x2.size)
    partials = memory.empty((2, bounds.shape[0] - 1, *gamma2.shape), np.float64)  # zeroed by the kernels
    if channel_size == 1:  # one gamma per element: the elementwise work in x2's precision
        gamma2 = np.ascontiguousarray(gamma2, dtype=x2.dtype)
        dgamma, dbeta = _input_grad_rows_working(dout2, x2, stats.pivot, stats.shift, stats.rstd, gamma2, bounds, dx2,
                                                 partials)
    else:
        (gamma2,) = _params(gamma2)
        dgamma, dbeta = _input_grad_rows(dout2, x2, stats.pivot, stats.shift, stats.rstd, gamma2, channel_size,
                                         bounds, dx2, partials)
    return dx2, dgamma, dbeta
