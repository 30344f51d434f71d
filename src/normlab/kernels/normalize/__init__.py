"""The compiled (numba) twin of the normalization core, `normlab.functional.normalize`: the contract of
`normalize_affine` and `normalize_affine_backward`, fused and compiled for the layouts every normalization
reduces to. `normlab.kernels.backend.compiled_twin("normalize", ...)` returns this module, whose `forward`,
`normalized` and `backward` reshape the core's view (groups and parameters as axes) into a layout, one file
each; the core never imports it.

- "channels" (`channels.py`): x (N, C, *S) with statistics over every axis but 1 and gamma (1, C, 1...),
  viewed as (N, C, S), one group per channel (batch norm); S = 1 in `columns.py`.
- "rows" (`rows.py`): x (*R, *K) with statistics over the trailing axes K, gamma varying over the last axes
  of R (G values, the groups) and over the leading axes of K (the channels of a row), constant over the
  rest: viewed as (prod R, prod K), one group per row, row r using gamma2[r % G] with one value per run of
  `channel_size` elements. Layer norm (R = (N,), G = 1); group norm ((N, G, C/G, *S), R = (N, G)) and
  instance norm, whose channels hold several elements, in `groups.py`.

Each layout is built from `moments.py` (the moments of a chunk, Chan's merge, the backward's sums) and
`elementwise.py` (the centred term, xhat, the affine and the input gradient, each written once). Forward,
for a group of M elements with pivot p (its first element, as `normalize` pivots):

    shift = mean(x - p)                          so mean = p + shift, exact for data far from zero
    var   = mean((x - p - shift)^2)
    rstd  = 1 / sqrt(var + eps)
    xhat  = ((x - p) - shift) * rstd
    out   = gamma * xhat + beta

The statistics take one pass over memory, chunk by chunk. The pivot is never loaded just before the loop
that sums about it: a value fresh from memory that every element waits for stalls each chunk by a memory
latency.

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
(rows: one), the fewest that one statistics pass and one elementwise pass allow. Threads: numba's layer as
`normlab.kernels.backend.choose_threading_layer` picks it (`common.py` asks on import).
"""

from __future__ import annotations

import math

import numpy as np

from normlab.kernels.normalize.channels import normalize_channels, normalize_channels_backward, normalized_channels
from normlab.kernels.normalize.moments import statistics_size
from normlab.kernels.normalize.rows import normalize_rows, normalize_rows_backward, normalized_rows
from normlab.kernels.statistics import GroupStatistics

_LARGEST = {np.dtype(t): float(np.finfo(t).max) for t in (np.float32, np.float64)}


def _rows(a: np.ndarray, first_stat_axis: int) -> np.ndarray:
    """(*R, *K) -> (prod R, prod K): one row per group."""
    return a.reshape(math.prod(a.shape[:first_stat_axis]), -1)


def _row_view(x: np.ndarray, gamma: np.ndarray, first_stat_axis: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(x2 (prod R, prod K), gamma2 (G, channels per row), channel_size) for x (*R, *K), gamma broadcastable."""
    x2, gamma2 = _rows(x, first_stat_axis), _rows(gamma, first_stat_axis)
    return x2, gamma2, x2.shape[1] // gamma2.shape[1]


def _channels(a: np.ndarray) -> np.ndarray:
    """(N, C, *S) -> (N, C, S)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def statistics_in_range(stats: GroupStatistics, dtype: np.dtype, count: int) -> bool:
    """Whether a compiled forward's statistics can be trusted for x of `dtype` with `count` values per
    group: every value finite and no group near the top of the dtype's range.

    The kernels form x - pivot and (x - pivot) - shift in x's dtype; both stay finite when every |x| is
    below half the dtype's largest value M. Any group with max |x| >= M / 2 has
    sqrt(var) + |mean| >= rms(x) >= M / (2 sqrt(count)), so checking that bound on the O(groups) statistics
    catches every such group, and rarely a harmless one; the core then runs NumPy, which rescales.
    """
    bound = _LARGEST[dtype] / (2.0 * math.sqrt(count))
    return bool(statistics_size(stats.pivot, stats.shift, stats.var) < bound)  # False for NaN too


def forward(
    layout: str, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, first_stat_axis: int
) -> tuple[np.ndarray, GroupStatistics] | None:
    """out = gamma * xhat + beta and the per-group statistics, or None where the statistics are out of the
    kernels' range (the core then runs NumPy).

    Inputs: x in the core's view, float32 or float64; gamma, beta broadcastable to it (the layout's
    shapes, see the module docstring); first_stat_axis: the first statistics axis (rows).
    Returns (out in x's shape and dtype, GroupStatistics with one group per channel or row).
    """
    if layout == "channels":
        out, stats = normalize_channels(_channels(x), gamma.reshape(-1), beta.reshape(-1), eps)
    else:
        x2, gamma2, channel_size = _row_view(x, gamma, first_stat_axis)
        out, stats = normalize_rows(x2, gamma2, _rows(beta, first_stat_axis), channel_size, eps)
    if not statistics_in_range(stats, x.dtype, x.size // len(stats.var)):  # values per group
        return None
    return out.reshape(x.shape), stats


def normalized(layout: str, x: np.ndarray, stats: GroupStatistics, first_stat_axis: int) -> np.ndarray:
    """xhat (x's shape and dtype) recomputed from x and the forward's statistics."""
    if layout == "channels":
        return normalized_channels(_channels(x), stats).reshape(x.shape)
    return normalized_rows(_rows(x, first_stat_axis), stats).reshape(x.shape)


def backward(
    layout: str, dout: np.ndarray, x: np.ndarray, stats: GroupStatistics, gamma: np.ndarray, first_stat_axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx in x's shape and dtype, dgamma, dbeta in gamma's shape and float64); dout of x's shape and dtype."""
    if layout == "channels":
        dx, dgamma, dbeta = normalize_channels_backward(_channels(dout), _channels(x), stats, gamma.reshape(-1))
    else:
        x2, gamma2, channel_size = _row_view(x, gamma, first_stat_axis)
        dx, dgamma, dbeta = normalize_rows_backward(_rows(dout, first_stat_axis), x2, stats, gamma2, channel_size)
    return dx.reshape(x.shape), dgamma.reshape(gamma.shape), dbeta.reshape(gamma.shape)
