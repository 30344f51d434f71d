"""Layer, group and instance norm: x viewed as (R, K), one group per row. Layer norm: R = N, K = the
features. Group norm: R = N * G, K = (C / G) * S (`groups.py` does the elementwise work of rows whose
channels hold several elements).

Rows with one gamma per element (layer norm's elementwise affine, and group norm of (N, C) batches) do
their elementwise work in x's precision, around the row's mean rounded to it (`working_centre`): in float32
that is twice float64's vector width and no conversions, and xhat stays within a few float32 ulps of the
exact value however far the mean is from zero. Their row sums, and dgamma and dbeta, still add in float64.

The forward reads each row from memory once: its statistics, then its output while it is in cache. Rows of
at most CHUNK elements with one gamma per element are pipelined: the loop that writes row r's output sums
row r + 1 (`_normalize_row_and_sum_next`), so reads and writes stream together as in a copy, where summing a
row and then writing it left the reads and the writes each waiting in turn. Every row's pivot (its first
element) is loaded two rows before the loop that sums about it (`_normalize_row_block`): loaded just
before, it was a miss to memory that the whole loop waited on, once per row, wherever the hardware
prefetcher had not fetched that line yet (rows starting near the start of a 256-byte block, as NumPy's
arrays do), and one row ahead was not enough.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab import memory
from normlab.kernels.normalize.common import JIT, PARALLEL, REDUCE, contiguous
from normlab.kernels.normalize.elementwise import working_affine, working_centre, working_xhat
from normlab.kernels.normalize.groups import apply_rows, input_grad_rows, normalize_row_channels
from normlab.kernels.normalize.moments import CHUNK, chunk_moments, row_blocks, segment_moments, sum_blocks, sums_about
from normlab.kernels.statistics import GroupStatistics

PIPELINE_BLOCKS = 16  # blocks of rows of the forward, one task each; the results do not depend on it


@njit(fastmath={"contract"}, **JIT)
def _normalize_row_working(x, c, rstd, shift, gamma, beta, out):
    """out = gamma * xhat + beta over one row with one gamma per element, in x's precision."""
    for i in range(x.shape[0]):
        out[i] = working_affine(x[i], c, rstd, shift, gamma[i], beta[i])


@njit(fastmath=REDUCE, **JIT)
def _normalize_row_and_sum_next(x, c, rstd, shift, gamma, beta, out, nxt, p):
    """`_normalize_row_working` over row x, and in the same loop `sums_about(nxt, p)` of the next row."""
    s = 0.0
    q = 0.0
    for i in range(x.shape[0]):
        out[i] = working_affine(x[i], c, rstd, shift, gamma[i], beta[i])
        d = np.float64(nxt[i] - p)
        s += d
        q += d * d
    return s, q


@njit(**JIT)
def _normalize_row_block(x2, gamma2, beta2, channel_size, eps, lo, hi, pivot, shift, var, rstd, out2):
    """Statistics and output of rows lo..hi-1 of x2 (R, K), each row's pivot loaded two rows ahead.

    Pipelined (one gamma per element, K <= CHUNK): row r's sums were taken while row r - 1 was written,
    each row one chunk of `segment_moments`, whose statistics these equal exactly. Otherwise the row's
    statistics come from `segment_moments` first."""
    k = x2.shape[1]
    groups = gamma2.shape[0]
    last = hi - 1
    pipelined = channel_size == 1 and k <= CHUNK
    p = x2[lo, 0]  # pivot of row r
    p_next = x2[min(lo + 1, last), 0]  # of row r + 1
    s, q = sums_about(x2[lo], p) if pipelined else (0.0, 0.0)
    for r in range(lo, hi):
        p_after = x2[min(r + 2, last), 0]  # of row r + 2, two rows ahead of its use
        row = x2[r]
        pivot[r] = p
        if pipelined:
            n = np.float64(k)
            row_shift, m2 = chunk_moments(k, s, q)
        else:
            n, row_shift, m2 = segment_moments(row, p)
        shift[r], var[r] = row_shift, m2 / n
        rstd[r] = 1.0 / np.sqrt(var[r] + eps)
        g = r % groups
        if channel_size > 1:
            normalize_row_channels(row, np.float64(p), row_shift, rstd[r], gamma2[g], beta2[g], channel_size, out2[r])
        else:
            c, rs, sh = working_centre(row, np.float64(p), row_shift, rstd[r])
            if pipelined and r < last:
                s, q = _normalize_row_and_sum_next(row, c, rs, sh, gamma2[g], beta2[g], out2[r], x2[r + 1], p_next)
            else:
                _normalize_row_working(row, c, rs, sh, gamma2[g], beta2[g], out2[r])
        p, p_next = p_next, p_after


@njit(**PARALLEL)
def _normalize_rows(x2, gamma2, beta2, channel_size, eps, out2):
    """Statistics of every row and out = gamma * xhat + beta, over PIPELINE_BLOCKS blocks of rows.
    gamma2 and beta2 come in x2's dtype for channel_size 1, else in float64."""
    r_ = x2.shape[0]
    pivot = np.empty(r_, x2.dtype)
    shift = np.empty(r_)
    var = np.empty(r_)
    rstd = np.empty(r_)
    blocks = min(r_, PIPELINE_BLOCKS)
    for b in prange(blocks):
        lo, hi = b * r_ // blocks, (b + 1) * r_ // blocks
        _normalize_row_block(x2, gamma2, beta2, channel_size, eps, lo, hi, pivot, shift, var, rstd, out2)
    return pivot, shift, var, rstd


@njit(fastmath=REDUCE, **JIT)
def _row_grad_sums_working(dout, x, c, rstd, shift, gamma, dgamma, dbeta):
    """One row with one gamma per element: returns (sum(g), sum(g * xhat)) summed in float64, g = gamma *
    dout and xhat formed in x's precision, and adds dout * xhat and dout to the float64 partial sums dgamma
    and dbeta (float64, not float32 flushed every few rows: those lost digits where dout cancels)."""
    sum_g = 0.0
    sum_gxhat = 0.0
    for i in range(x.shape[0]):
        d = dout[i]
        xhat = working_xhat(x[i], c, rstd, shift)
        g = gamma[i] * d
        dgamma[i] += np.float64(d * xhat)
        dbeta[i] += np.float64(d)
        sum_g += np.float64(g)
        sum_gxhat += np.float64(g * xhat)
    return sum_g, sum_gxhat


@njit(fastmath={"contract"}, **JIT)
def _input_grad_row_working(dout, x, c, a, b, e, gamma, dx):
    """dx = a * gamma * dout + b * (x - c) + e over one row, in x's precision: with xhat = (x - c) * rstd
    + shift (`working_centre`), a = rstd, b = -rstd^2 * mean(g * xhat) and
    e = -rstd * (mean(g) + mean(g * xhat) * shift) this is rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    for i in range(x.shape[0]):
        dx[i] = a * (gamma[i] * dout[i]) + (b * (x[i] - c) + e)


@njit(**PARALLEL)
def _input_grad_rows_working(dout2, x2, pivot, shift, rstd, gamma2, bounds, dx2, partials):
    """`groups.input_grad_rows` for one gamma per element, the elementwise work in x's precision with
    gamma2 (G, K) in x's dtype; the row sums and the block partials of dgamma and dbeta (partials:
    (2, blocks, G, K)) in float64."""
    groups, k = gamma2.shape
    dgamma, dbeta = partials[0], partials[1]
    for b in prange(bounds.shape[0] - 1):
        dgamma[b] = 0.0
        dbeta[b] = 0.0
        for r in range(bounds[b], bounds[b + 1]):
            g = r % groups
            x, dout, gamma = x2[r], dout2[r], gamma2[g]
            rs = rstd[r]
            c, rs_w, sh_w = working_centre(x, np.float64(pivot[r]), shift[r], rs)
            sum_g, sum_gxhat = _row_grad_sums_working(dout, x, c, rs_w, sh_w, gamma, dgamma[b, g], dbeta[b, g])
            mean_g, mean_gxhat = sum_g / k, sum_gxhat / k
            t = x.dtype.type
            slope, offset = t(-rs * rs * mean_gxhat), t(-rs * (mean_g + mean_gxhat * np.float64(sh_w)))
            _input_grad_row_working(dout, x, c, rs_w, slope, offset, gamma, dx2[r])
    return sum_blocks(dgamma), sum_blocks(dbeta)


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
    (x2,) = contiguous(x2)
    gamma2, beta2 = contiguous(gamma2, beta2, dtype=x2.dtype if channel_size == 1 else np.float64)
    out2 = memory.empty_like(x2)
    pivot, shift, var, rstd = _normalize_rows(x2, gamma2, beta2, channel_size, eps, out2)
    return out2, GroupStatistics(pivot, shift, var, rstd)


def normalized_rows(x2: np.ndarray, stats: GroupStatistics) -> np.ndarray:
    """xhat (R, K) recomputed from x2 and the forward's statistics, in float64 and then rounded to x2's
    dtype. For channel_size > 1 that is exactly the xhat the forward formed; with one gamma per element the
    forward formed it in x2's precision, within a few ulps of this."""
    (x2,) = contiguous(x2)
    xhat = np.empty_like(x2)
    one, zero = np.ones((1, 1)), np.zeros((1, 1))  # gamma 1 and beta 0 over the whole row
    apply_rows(x2, stats.pivot, stats.shift, stats.rstd, one, zero, x2.shape[1], xhat)
    return xhat


def normalize_rows_backward(
    dout2: np.ndarray, x2: np.ndarray, stats: GroupStatistics, gamma2: np.ndarray, channel_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer / group / instance norm backward. dout2, x2: (R, K) of one dtype; gamma2: (G, K // channel_size).
    Returns (dx2 in x2's dtype, dgamma2 and dbeta2 shaped like gamma2, in float64)."""
    dout2, x2 = contiguous(dout2, x2)
    (gamma2,) = contiguous(gamma2, dtype=x2.dtype if channel_size == 1 else np.float64)
    dx2 = memory.empty_like(x2)
    bounds = row_blocks(x2.shape[0], gamma2.size, x2.size)
    partials = memory.empty((2, bounds.shape[0] - 1, *gamma2.shape), np.float64)  # zeroed by the kernels
    p, sh, rs = stats.pivot, stats.shift, stats.rstd
    if channel_size == 1:
        return dx2, *_input_grad_rows_working(dout2, x2, p, sh, rs, gamma2, bounds, dx2, partials)
    return dx2, *input_grad_rows(dout2, x2, p, sh, rs, gamma2, channel_size, bounds, dx2, partials)
