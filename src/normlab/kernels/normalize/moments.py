"""The reductions every layout is built from: the moments of a chunk, Chan's merge of chunk moments, the
backward's sums over a segment, and the blocks whose partial results are merged after a parallel loop.

A chunk (at most CHUNK elements, or a block of rows) gives its count, mean and M2 from float64 sums of x
minus a pivot p, one of the group's elements: shift = mean(x - p), M2 = sum((x - p)^2) - sum(x - p) * shift.
Nothing forms E[x^2] - E[x]^2 over a group, so a mean far from zero costs nothing: the shifted sums lose
only in proportion to how far the pivot lies from the mean, in standard deviations. Chunks merge with
Chan, Golub & LeVeque's formula, in a fixed order, so no result depends on the thread count.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from normlab.kernels.normalize.common import JIT, REDUCE
from normlab.kernels.normalize.elementwise import centred

CHUNK = 4096  # elements per shifted-sum chunk: bounds the rounding of the one-pass sums
MAX_BLOCKS = 64  # row blocks whose partial sums are merged after the parallel loop
ELEMENTS_PER_PARTIAL = 16  # at least this many input elements per partial sum: zeroing, writing and
#                            summing the partials stays a small fraction of the traffic


@njit(fastmath=REDUCE, **JIT)
def sums_about(seg, p):
    """(sum(x - p), sum((x - p)^2)) of a 1-D segment, summed in float64; p is one of its elements.

    x - p is formed in seg's dtype: exact for x within a factor of two of p (Sterbenz), otherwise within
    half an ulp of itself, the size of the spread; its float64 square is exact for float32 data. A float32
    loop so runs at float32's vector width, where converting each element first ran at float64's."""
    s = 0.0
    q = 0.0
    for i in range(seg.shape[0]):
        d = np.float64(seg[i] - p)
        s += d
        q += d * d
    return s, q


@njit(**JIT)
def chunk_moments(count, s, q):
    """(mean - p, M2) of a chunk of `count` values from its sums about p: s = sum(x - p), q = sum((x - p)^2)."""
    shift = s / count
    return shift, q - s * shift


@njit(**JIT)
def merge(n_a, shift_a, m2_a, n_b, shift_b, m2_b):
    """(count, mean, M2) of the union of two sets (Chan, Golub & LeVeque); means relative to one origin."""
    n = n_a + n_b
    delta = shift_b - shift_a
    return n, shift_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * (n_b / n))


@njit(**JIT)
def segment_moments(seg, origin):
    """(count, mean - origin, M2) of a 1-D segment in one pass over memory, CHUNK elements at a time, each
    chunk summed about `origin` (a value in seg's dtype: its group's pivot)."""
    n, shift, m2 = 0.0, 0.0, 0.0
    for lo in range(0, seg.shape[0], CHUNK):
        chunk = seg[lo : lo + CHUNK]
        k = chunk.shape[0]
        s, q = sums_about(chunk, origin)
        chunk_shift, chunk_m2 = chunk_moments(k, s, q)
        n, shift, m2 = merge(n, shift, m2, k, chunk_shift, chunk_m2)
    return n, shift, m2


@njit(**JIT)
def merge_blocks(counts, shift, m2):
    """Merge per-block (count, shift, M2) into one mean - origin and variance per column. Serial, and
    vectorized across columns: a parallel region costs more than this."""
    blocks, c_ = shift.shape
    n = np.zeros(c_)
    group_shift = np.zeros(c_)
    group_m2 = np.zeros(c_)
    for b in range(blocks):
        for c in range(c_):
            merged = merge(n[c], group_shift[c], group_m2[c], counts[b], shift[b, c], m2[b, c])
            n[c], group_shift[c], group_m2[c] = merged
    return group_shift, group_m2 / n


@njit(**JIT)
def statistics_size(pivot, shift, var):
    """max over groups of |pivot| + |shift| + sqrt(var): a bound on how far a group's values reach, read
    off the statistics (O(groups)) to tell data near the top of the dtype's range (see
    `normlab.kernels.normalize.statistics_in_range`). NaN if any statistic is NaN."""
    size = 0.0
    for g in range(var.shape[0]):
        v = abs(np.float64(pivot[g])) + abs(shift[g]) + np.sqrt(var[g])
        if not v <= size:  # larger, or NaN: NaN stays
            size = v
            if np.isnan(v):
                return v
    return size


def rstd_of(var: np.ndarray, eps: float) -> np.ndarray:
    return 1.0 / np.sqrt(var + eps)  # float64


@njit(fastmath=REDUCE, **JIT)
def grad_sums(dout, x, p, shift):
    """(sum(dout), sum(dout * (x - mean))) over a segment, in float64: the backward's two reductions, from
    which dbeta = sum(dout), dgamma = rstd * sum(dout * (x - mean)) and the means of dx follow."""
    a = 0.0
    b = 0.0
    for i in range(x.shape[0]):
        g = np.float64(dout[i])
        a += g
        b += g * centred(x[i], p, shift)
    return a, b


@njit(**JIT)
def sum_blocks(partials):
    """(G, P) sum over the blocks of (blocks, G, P) partial sums, added in block order (as NumPy's
    sum(axis=0)). In the kernel, with the zeroing: from Python they cost interpreter time on cold caches."""
    total = partials[0].copy()
    for b in range(1, partials.shape[0]):
        total += partials[b]
    return total


@functools.lru_cache(maxsize=64)
def row_blocks(rows: int, partials_per_block: int, elements: int, min_rows: int = 1) -> np.ndarray:
    """Bounds of the row blocks whose partial sums are merged after a parallel loop: at most MAX_BLOCKS,
    at least `min_rows` rows each where there are enough, and ELEMENTS_PER_PARTIAL input elements per
    partial sum (so a (64, 8192) layer norm gets 4 blocks, not 64 with as many partials as inputs). They
    depend on the shape only, never on the thread count. Cached (read-only): np.linspace costs more than
    a small layer's kernel when the caches are cold."""
    by_traffic = elements // (ELEMENTS_PER_PARTIAL * max(partials_per_block, 1))
    blocks = min(MAX_BLOCKS, max(1, rows // min_rows), max(1, by_traffic))
    bounds = np.linspace(0, rows, blocks + 1).astype(np.int64)  # (blocks + 1,)
    bounds.setflags(write=False)
    return bounds
