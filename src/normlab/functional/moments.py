"""Statistics of normalization groups: count, mean and M2, computed without cancellation, and merged.

A normalization group is the set of elements that share one mean and one variance: for batch norm on
(N, C, H, W) every element of a channel, for layer norm every element of a sample. `moments` computes the
mean and biased variance of every group of x over `axes`:

    mean = (1/M) sum_i x_i
    var  = (1/M) sum_i (x_i - mean)^2          (two passes, never E[x^2] - E[x]^2)

Parts of one group held apart (by several processes, or by the chunks of a compiled kernel) are merged
with Chan's formula (`merge_moments`). This is the only place normlab computes these statistics in NumPy;
`normalize` calls it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

Axes = tuple[int, ...]


def group_size(shape: tuple[int, ...], axes: Axes) -> int:
    """Number of elements in one normalization group: the product of the sizes of `axes`."""
    return math.prod(shape[a] for a in axes)  # Python ints: no overflow, and no NumPy call per layer call


@functools.lru_cache(maxsize=256)
def reduced_shape(shape: tuple[int, ...], axes: Axes) -> tuple[int, ...]:
    """The shape of the statistics: `shape` with `axes` set to 1 (cached: each layer call asks it once or twice)."""
    return tuple(1 if a in axes else size for a, size in enumerate(shape))


def is_half(dtype: np.dtype) -> bool:
    """float16 or bfloat16 (ml_dtypes): floating types narrower than float32, normalized in float32."""
    return np.dtype(dtype).itemsize < 4


def finite(*arrays: np.ndarray) -> bool:
    """Every value finite: an O(groups) check on the statistics, so the wide path costs only when needed."""
    return all(bool(np.isfinite(a).all()) for a in arrays)


def _pivot(x: np.ndarray, axes: Axes) -> np.ndarray:
    """One element of every group (its first), shaped like the group statistics.

    Subtracting a value from inside the group before summing makes the sum small, so a float32 mean of
    data far from zero (mean 1e4, std 1e-2) stays accurate; for values within a factor of two of the pivot
    the subtraction is exact (Sterbenz).
    """
    index = tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))
    return x[index]


def centered(x: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x - mean, mean, biased var) over `axes` (statistics keepdims), x - mean in a new array."""
    m = group_size(x.shape, axes)
    pivot = _pivot(x, axes)  # shape of the statistics
    xmu = np.subtract(x, pivot)  # x - pivot, a new array we centre in place
    shift = xmu.sum(axis=axes, keepdims=True)
    shift /= m  # mean(x - pivot)
    xmu -= shift  # x - mean
    var = sum_of_products(xmu, xmu, axes)
    var /= m
    return xmu, pivot + shift, var


def centered_wide(x: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`centered` for groups whose sums overflow x's dtype: (x - mean, mean, var, scale) in float64 on x
    scaled per group, the first three in the scaled units (multiply the mean by scale, var by scale**2).

    Every group whose largest magnitude exceeds 2^400 is divided by a power of two near it (exact), so no
    square overflows; the other groups have scale 1.
    """
    x64 = x.astype(np.float64)
    amax = np.max(np.abs(x64), axis=axes, keepdims=True)  # (stats shape)
    with np.errstate(invalid="ignore"):
        huge = amax > 2.0**400  # below this, float64 squares of differences and their sums cannot overflow
    _, exponent = np.frexp(np.where(huge, amax, 1.0))
    scale = np.where(huge, np.ldexp(1.0, exponent - 1), 1.0)  # power of two <= amax, or 1
    xmu, mean_s, var_s = centered(x64 / scale, axes)
    return xmu, mean_s, var_s, scale


def moments(x: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray]:
    """The mean and biased variance of `x` over `axes` (keepdims), computed as `normalize` computes them.

    For callers that combine statistics before normalizing (SyncBatchNorm merges every process's
    moments, then calls `normalize_with_stats` with the merged ones). Half-precision x gives float32
    statistics; a group beyond x's range is measured in float64 (its variance may then be inf).
    """
    if is_half(x.dtype):
        return moments(x.astype(np.float32), axes)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow here is caught below and redone
        _, mean, var = centered(x, axes)
    if not finite(mean, var):
        _, mean_s, var_s, scale = centered_wide(x, axes)
        with np.errstate(over="ignore"):
            return (mean_s * scale).astype(x.dtype), (var_s * scale * scale).astype(x.dtype)
    return mean, var


def merge_moments(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The count, mean and M2 of the union of P parts, from each part's (Chan, Golub & LeVeque, 1979).

    M2 is the sum of squared deviations from the part's own mean (count times its biased variance):

        n    = sum_p n_p
        mean = sum_p n_p m_p / n
        M2   = sum_p M2_p + sum_p n_p (m_p - mean)^2

    Every term is a sum of non-negative numbers or a weighted mean, so nothing cancels: unlike adding up
    sum(x) and sum(x^2), this is exact to rounding for data far from zero and for parts of very unequal
    sizes (including empty ones). The compiled kernels merge their chunks by the same formula.

    Inputs:
    - counts: (P,) number of values in each part (0 allowed; the total must be positive).
    - means: (P, *S) each part's mean (any value for an empty part); S the shape of one statistic.
    - m2s: (P, *S) each part's sum of squared deviations from its own mean.

    Returns (n, mean, M2): n a float, mean and M2 of shape S, in float64. The biased variance is M2 / n.
    """
    counts = np.asarray(counts, dtype=np.float64)  # (P,)
    means, m2s = np.asarray(means, dtype=np.float64), np.asarray(m2s, dtype=np.float64)  # (P, *S)
    if counts.ndim != 1 or means.shape[:1] != counts.shape or m2s.shape != means.shape:
        raise ValueError(f"counts must be (P,) and means, m2s (P, ...) alike, got {counts.shape}, {means.shape}, "
                         f"{m2s.shape}")
    if np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"counts must be >= 0 with a positive total, got {counts.tolist()}")
    n = counts.sum()
    c = counts.reshape((-1,) + (1,) * (means.ndim - 1))  # (P, 1...)
    # An empty part's mean and M2 may be anything (even NaN); they must not reach the sums.
    means, m2s = np.where(c > 0, means, 0.0), np.where(c > 0, m2s, 0.0)  # (P, *S)
    mean = (c * means).sum(axis=0) / n  # S
    deviation = means - mean  # (P, *S)
    m2 = m2s.sum(axis=0) + (c * deviation * deviation).sum(axis=0)  # S
    return float(n), mean, m2


def inverse_std(var: np.ndarray, eps: float, dtype: np.dtype | None = None) -> np.ndarray:
    """rstd = 1 / sqrt(var + eps), in `dtype` (default: NumPy's result type): the one place the square
    root of a variance is taken."""
    rstd = 1.0 / np.sqrt(var + eps)
    return rstd if dtype is None else rstd.astype(dtype, copy=False)


@functools.lru_cache(maxsize=128)
def _einsum_subscripts(ndim: int, axes: Axes) -> str:
    """"abc,abc->b" for ndim 3 and axes (0, 2): built once per layout, not per call."""
    letters = "abcdefghijklmnopqrstuvw"[:ndim]
    kept = "".join(letters[a] for a in range(ndim) if a not in axes)
    return f"{letters},{letters}->{kept}"


def sum_of_products(a: np.ndarray, b: np.ndarray, axes: Axes) -> np.ndarray:
    """sum(a * b) over axes with keepdims, without materializing a * b."""
    axes = tuple(axes)
    reduced = np.einsum(_einsum_subscripts(a.ndim, axes), a, b)
    return reduced.reshape(reduced_shape(a.shape, axes))
