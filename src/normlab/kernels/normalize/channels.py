"""Batch norm: x viewed as (N, C, S), one group per channel c over every n and s, gamma and beta per channel.

By plane size S: S = 1 is an (N, D) batch (`columns.py`). Small planes (S <= SMALL_PLANE, a small CNN's
4x4 to 16x16 maps) are reduced by (block of images, channel): the block's planes of that channel, at most
CHUNK elements, form one chunk, so a plane of 16 values costs neither a task nor a merge of its own; their
elementwise passes run one image per task, or for S <= COLUMN_PLANE as the (N, C * S) column kernels with
the per-channel values repeated over each plane. Larger planes go plane by plane, CHUNK at a time.

Every plane of channel c sums about the channel's pivot x[0, c, 0], which stays in cache after image 0: a
plane pivoting on its own first element waited for that element from memory before it could start.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from normlab import memory
from normlab.kernels.normalize.columns import (
    BLOCK_ROWS,
    column_block_grad_sums,
    column_block_moments,
    input_grad_columns,
    normalize_columns,
)
from normlab.kernels.normalize.common import PARALLEL, contiguous
from normlab.kernels.normalize.elementwise import input_grad_segment, normalize_segment
from normlab.kernels.normalize.moments import (
    CHUNK,
    chunk_moments,
    grad_sums,
    merge_blocks,
    row_blocks,
    rstd_of,
    segment_moments,
    sums_about,
)
from normlab.kernels.statistics import GroupStatistics

COLUMN_PLANE = 64  # (N, C, S) with S up to this: the elementwise passes run as (N, C * S) columns
SMALL_PLANE = 256  # (N, C, S) with S up to this: one task per (block of images, channel), not per plane


@njit(**PARALLEL)
def plane_moments(x3):
    """Per plane (n, c) of x3 (N, C, S): mean - pivot_c and M2, pivot_c = x3[0, c, 0]."""
    n_, c_, _ = x3.shape
    shift = np.empty((n_, c_))
    m2 = np.empty((n_, c_))
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        _, plane_shift, plane_m2 = segment_moments(x3[n, c], x3[0, c, 0])
        shift[n, c], m2[n, c] = plane_shift, plane_m2
    return shift, m2


@njit(**PARALLEL)
def image_block_moments(x3, bounds, shift, m2):
    """Per block of images and per channel c of x3 (N, C, S): mean - x3[0, c, 0] and M2, into shift and
    m2 (blocks, C). The block's planes of one channel (at most CHUNK elements) are one chunk; one task per
    (block, channel), so a small plane costs no division or merge."""
    c_ = x3.shape[1]
    for t in prange((bounds.shape[0] - 1) * c_):
        b, c = t // c_, t % c_
        lo, hi = bounds[b], bounds[b + 1]
        p = x3[0, c, 0]
        s, q = 0.0, 0.0
        for n in range(lo, hi):
            plane_s, plane_q = sums_about(x3[n, c], p)
            s += plane_s
            q += plane_q
        shift[b, c], m2[b, c] = chunk_moments((hi - lo) * x3.shape[2], s, q)


@njit(**PARALLEL)
def plane_grad_sums(dout3, x3, pivot, shift):
    """Per plane (n, c): sum(dout) and sum(dout * (x - mean_c))."""
    n_, c_, _ = x3.shape
    dout_sum = np.empty((n_, c_))
    centered_sum = np.empty((n_, c_))
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        a, b = grad_sums(dout3[n, c], x3[n, c], np.float64(pivot[c]), shift[c])
        dout_sum[n, c], centered_sum[n, c] = a, b
    return dout_sum, centered_sum


@njit(**PARALLEL)
def image_block_grad_sums(dout3, x3, pivot, shift, bounds, dout_sum, centered_sum):
    """Per block of images and per channel: sum(dout) and sum(dout * (x - mean_c)), into dout_sum and
    centered_sum (blocks, C); one task per (block, channel), as `image_block_moments`."""
    c_ = x3.shape[1]
    for t in prange((bounds.shape[0] - 1) * c_):
        b, c = t // c_, t % c_
        p, sh = np.float64(pivot[c]), shift[c]
        a, s = 0.0, 0.0
        for n in range(bounds[b], bounds[b + 1]):
            plane_a, plane_s = grad_sums(dout3[n, c], x3[n, c], p, sh)
            a += plane_a
            s += plane_s
        dout_sum[b, c], centered_sum[b, c] = a, s


@njit(**PARALLEL)
def normalize_planes(x3, pivot, shift, rstd, gamma, beta, out3):
    """out3 = gamma * xhat + beta, one plane (n, c) per task."""
    n_, c_, _ = x3.shape
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        normalize_segment(x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], beta[c], out3[n, c])


@njit(**PARALLEL)
def normalize_images(x3, pivot, shift, rstd, gamma, beta, out3):
    """`normalize_planes` one image (its C planes) per task: for small planes, where a division per plane
    to find (n, c) costs as much as the plane."""
    for n in prange(x3.shape[0]):
        for c in range(x3.shape[1]):
            normalize_segment(x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], beta[c], out3[n, c])


@njit(**PARALLEL)
def input_grad_planes(dout3, x3, pivot, shift, rstd, gamma, dout_sum, centered_sum, dx3):
    """dx3, one plane (n, c) per task, from the per-channel sums (C,) of dout and dout * (x - mean)."""
    n_, c_, s_ = x3.shape
    m = n_ * s_
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        mean_g = gamma[c] * dout_sum[c] / m
        mean_gxhat = gamma[c] * centered_sum[c] * rstd[c] / m
        input_grad_segment(
            dout3[n, c], x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], mean_g, mean_gxhat, dx3[n, c]
        )


@njit(**PARALLEL)
def input_grad_images(dout3, x3, pivot, shift, rstd, gamma, dout_sum, centered_sum, dx3):
    """`input_grad_planes` one image per task, as `normalize_images`."""
    m = x3.shape[0] * x3.shape[2]
    for n in prange(x3.shape[0]):
        for c in range(x3.shape[1]):
            mean_g = gamma[c] * dout_sum[c] / m
            mean_gxhat = gamma[c] * centered_sum[c] * rstd[c] / m
            input_grad_segment(dout3[n, c], x3[n, c], np.float64(pivot[c]), shift[c], rstd[c], gamma[c], mean_g,
                               mean_gxhat, dx3[n, c])


@functools.lru_cache(maxsize=64)
def _image_blocks(images: int, plane: int) -> np.ndarray:
    """Bounds of the blocks of images whose planes of one channel form one chunk: as few as hold at most
    CHUNK elements each, of near equal size. They depend on the shape only, never on the thread count.
    Cached (read-only), as `row_blocks`."""
    blocks = -(-images // max(1, CHUNK // plane))
    bounds = np.linspace(0, images, blocks + 1).astype(np.int64)  # (blocks + 1,)
    bounds.setflags(write=False)
    return bounds


def _per_column(plane: int, *per_channel: np.ndarray) -> list[np.ndarray]:
    """Per-channel vectors (C,) repeated over each channel's plane (C * plane,): the column kernels'
    operands for an (N, C, S) batch viewed as (N, C * S)."""
    return list(per_channel) if plane == 1 else [np.repeat(v, plane) for v in per_channel]


def _apply_channels(x3: np.ndarray, stats: GroupStatistics, gamma: np.ndarray, beta: np.ndarray,
                    out3: np.ndarray) -> np.ndarray:
    """out3 = gamma * xhat + beta (N, C, S) from the statistics, by plane size (see the module docstring)."""
    n, c, s = x3.shape
    p, sh, rs = stats.pivot, stats.shift, stats.rstd
    if s <= COLUMN_PLANE:
        normalize_columns(x3.reshape(n, c * s), *_per_column(s, p, sh, rs, gamma, beta), out3.reshape(n, c * s))
    elif s <= SMALL_PLANE:
        normalize_images(x3, p, sh, rs, gamma, beta, out3)
    else:
        normalize_planes(x3, p, sh, rs, gamma, beta, out3)
    return out3


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
    (x3,), (gamma, beta) = contiguous(x3), contiguous(gamma, beta, dtype=np.float64)
    n, c, s = x3.shape
    out3 = memory.empty_like(x3)
    if s == 1:
        bounds = row_blocks(n, c, x3.size, BLOCK_ROWS)
        shift, m2 = np.zeros((len(bounds) - 1, c)), np.zeros((len(bounds) - 1, c))  # per block of rows
        column_block_moments(x3.reshape(n, c), bounds, shift, m2)
        counts = np.diff(bounds).astype(np.float64)
    elif s <= SMALL_PLANE:
        bounds = _image_blocks(n, s)
        shift, m2 = np.empty((len(bounds) - 1, c)), np.empty((len(bounds) - 1, c))  # per block of images
        image_block_moments(x3, bounds, shift, m2)
        counts = np.diff(bounds) * float(s)
    else:
        (shift, m2), counts = plane_moments(x3), np.full(n, float(s))  # per plane
    shift, var = merge_blocks(counts, shift, m2)
    stats = GroupStatistics(x3[0, :, 0].copy(), shift, var, rstd_of(var, eps))
    return _apply_channels(x3, stats, gamma, beta, out3), stats


def normalized_channels(x3: np.ndarray, stats: GroupStatistics) -> np.ndarray:
    """xhat (N, C, S) recomputed from x3 and the forward's statistics, exactly as the forward formed it."""
    (x3,) = contiguous(x3)
    ones, zeros = np.ones(x3.shape[1]), np.zeros(x3.shape[1])
    return _apply_channels(x3, stats, ones, zeros, np.empty_like(x3))


def normalize_channels_backward(
    dout3: np.ndarray, x3: np.ndarray, stats: GroupStatistics, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch norm backward in training. dout3 and x3: (N, C, S) of one dtype; gamma: (C,).
    Returns (dx3 in x3's dtype, dgamma (C,), dbeta (C,) in float64)."""
    (dout3, x3), (gamma,) = contiguous(dout3, x3), contiguous(gamma, dtype=np.float64)
    n, c, s = x3.shape
    p, sh, rs = stats.pivot, stats.shift, stats.rstd
    dx3 = memory.empty_like(x3)
    if s == 1:
        bounds = row_blocks(n, c, x3.size, BLOCK_ROWS)
        dout_sum, centered_sum = np.zeros((len(bounds) - 1, c)), np.zeros((len(bounds) - 1, c))  # per block
        column_block_grad_sums(dout3.reshape(n, c), x3.reshape(n, c), p, sh, bounds, dout_sum, centered_sum)
    elif s <= SMALL_PLANE:
        bounds = _image_blocks(n, s)
        dout_sum, centered_sum = np.empty((len(bounds) - 1, c)), np.empty((len(bounds) - 1, c))  # per block
        image_block_grad_sums(dout3, x3, p, sh, bounds, dout_sum, centered_sum)
    else:
        dout_sum, centered_sum = plane_grad_sums(dout3, x3, p, sh)  # per plane
    dout_sum, centered_sum = dout_sum.sum(axis=0), centered_sum.sum(axis=0)  # (C,) each
    if s <= COLUMN_PLANE:
        mean_g, mean_gxhat = gamma * dout_sum / (n * s), gamma * centered_sum * rs / (n * s)  # (C,) each
        per_column = _per_column(s, p, sh, rs, gamma, mean_g, mean_gxhat)
        input_grad_columns(dout3.reshape(n, c * s), x3.reshape(n, c * s), *per_column, dx3.reshape(n, c * s))
    elif s <= SMALL_PLANE:
        input_grad_images(dout3, x3, p, sh, rs, gamma, dout_sum, centered_sum, dx3)
    else:
        input_grad_planes(dout3, x3, p, sh, rs, gamma, dout_sum, centered_sum, dx3)
    return dx3, centered_sum * rs, dout_sum  # dgamma = sum(dout * xhat), dbeta = sum(dout)
