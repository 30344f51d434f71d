"""The compiled twin of the normalization core, as the core calls it: forward, xhat and backward of
out = gamma * xhat + beta for an input in the core's view (groups and parameters as axes) and a layout.

`normlab.kernels.backend.compiled_twin("normalize", ...)` returns this module; the core never imports it.
Here the core's view is reshaped into the two layouts the kernels (`normlab.kernels.normalize`) compile:

- "channels": x (N, C, *S) with statistics over every axis but 1 and gamma (1, C, 1...): the kernels'
  (N, C, S), one group per channel (batch norm).
- "rows": x (*R, *K) with statistics over the trailing axes K, gamma varying over the last axes of R
  (G values, the groups) and over the leading axes of K (the channels of a row), constant over the rest:
  the kernels' (prod R, prod K), row r using gamma2[r % G] with one value per run of `channel_size`
  elements. Layer norm (R = (N,), G = 1), group norm ((N, G, C/G, *S), R = (N, G)), instance norm.

The kernels keep per-group float64 statistics (`GroupStatistics`) instead of xhat; the backward
recomputes xhat from x.
"""

from __future__ import annotations

import math

import numpy as np

from normlab.kernels import normalize as kernels
from normlab.kernels.statistics import GroupStatistics

_LARGEST = {np.dtype(t): float(np.finfo(t).max) for t in (np.float32, np.float64)}


def _rows(a: np.ndarray, first_stat_axis: int) -> np.ndarray:
    """(*R, *K) -> (prod R, prod K): one row per group."""
    return a.reshape(math.prod(a.shape[:first_stat_axis]), -1)


def _row_params(x2: np.ndarray, gamma: np.ndarray, first_stat_axis: int) -> tuple[np.ndarray, int]:
    """gamma (broadcast shape) -> (gamma2 (G, channels per row), channel_size)."""
    gamma2 = _rows(gamma, first_stat_axis)
    return gamma2, x2.shape[1] // gamma2.shape[1]


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
    return bool(kernels.statistics_size(stats.pivot, stats.shift, stats.var) < bound)  # False for NaN too


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
        out, stats = kernels.normalize_channels(_channels(x), gamma.reshape(-1), beta.reshape(-1), eps)
        count = x.size // x.shape[1]
    else:
        x2 = _rows(x, first_stat_axis)
        gamma2, channel_size = _row_params(x2, gamma, first_stat_axis)
        out, stats = kernels.normalize_rows(x2, gamma2, _rows(beta, first_stat_axis), channel_size, eps)
        count = x2.shape[1]
    if not statistics_in_range(stats, x.dtype, count):
        return None
    return out.reshape(x.shape), stats


def normalized(layout: str, x: np.ndarray, stats: GroupStatistics, first_stat_axis: int) -> np.ndarray:
    """xhat (x's shape and dtype) recomputed from x and the forward's statistics."""
    if layout == "channels":
        return kernels.normalized_channels(_channels(x), stats).reshape(x.shape)
    return kernels.normalized_rows(_rows(x, first_stat_axis), stats).reshape(x.shape)


def backward(
    layout: str, dout: np.ndarray, x: np.ndarray, stats: GroupStatistics, gamma: np.ndarray, first_stat_axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx in x's shape and dtype, dgamma, dbeta in gamma's shape and float64); dout of x's shape and dtype."""
    if layout == "channels":
        dx, dgamma, dbeta = kernels.normalize_channels_backward(_channels(dout), _channels(x), stats,
                                                                gamma.reshape(-1))
    else:
        x2 = _rows(x, first_stat_axis)
        gamma2, channel_size = _row_params(x2, gamma, first_stat_axis)
        dx, dgamma, dbeta = kernels.normalize_rows_backward(_rows(dout, first_stat_axis), x2, stats, gamma2,
                                                            channel_size)
    return dx.reshape(x.shape), dgamma.reshape(gamma.shape), dbeta.reshape(gamma.shape)
