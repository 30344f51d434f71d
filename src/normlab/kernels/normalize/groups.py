"""Rows whose channels hold several elements: x viewed as (R, K), one group per row, made of
K / channel_size channels of channel_size contiguous elements, each with one gamma and beta. Group norm of
(N, C, *S): R = N * G, K = (C / G) * S, row r uses gamma2[r % G] (shape (G, C / G)); instance norm is
G = C; layer norm with per-channel parameters is G = 1. The elementwise work runs in float64, one channel
(a segment of one gamma) at a time. `rows.py` takes the statistics of these rows with its own, and runs
rows with one gamma per element (channel_size 1).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab.kernels.normalize.common import JIT, PARALLEL
from normlab.kernels.normalize.elementwise import input_grad_segment, normalize_segment
from normlab.kernels.normalize.moments import grad_sums, sum_blocks


@njit(**JIT)
def normalize_row_channels(x, p, shift, rstd, gamma, beta, channel_size, out):
    """out = gamma * xhat + beta over one row; gamma and beta (K / channel_size,) have one value per channel."""
    for j in range(gamma.shape[0]):
        lo, hi = j * channel_size, (j + 1) * channel_size
        normalize_segment(x[lo:hi], p, shift, rstd, gamma[j], beta[j], out[lo:hi])


@njit(**PARALLEL)
def apply_rows(x2, pivot, shift, rstd, gamma2, beta2, channel_size, out2):
    """out2 = gamma * xhat + beta with known statistics (recomputes xhat for a cache)."""
    groups = gamma2.shape[0]
    for r in prange(x2.shape[0]):
        g = r % groups
        normalize_row_channels(x2[r], np.float64(pivot[r]), shift[r], rstd[r], gamma2[g], beta2[g], channel_size,
                               out2[r])


@njit(**PARALLEL)
def input_grad_rows(dout2, x2, pivot, shift, rstd, gamma2, channel_size, bounds, dx2, partials):
    """dx of every row, and returns (dgamma, dbeta) (G, K / channel_size): the sums of dout * xhat and dout
    per parameter, taken per block of rows into `partials` (2, blocks, G, K / channel_size), any contents,
    and then added in block order. Each row is read from memory once; its second pass runs from cache."""
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
                dout_sum, centered_sum = grad_sums(dout[lo:hi], x[lo:hi], p, sh)
                dgamma[b, g, j] += centered_sum * rs
                dbeta[b, g, j] += dout_sum
                sum_g += gamma[j] * dout_sum
                sum_gxhat += gamma[j] * centered_sum * rs
            for j in range(gamma.shape[0]):
                lo, hi = j * channel_size, (j + 1) * channel_size
                input_grad_segment(dout[lo:hi], x[lo:hi], p, sh, rs, gamma[j], sum_g / k, sum_gxhat / k, dx[lo:hi])
    return sum_blocks(dgamma), sum_blocks(dbeta)
