"""The one normalization core.

Batch norm, spatial batch norm, layer norm, group norm and instance norm all normalize an array over a
set of axes and then apply a per-feature affine. This module does the first part, forward and backward;
every normalization in normlab (functional layers, modules, compiled kernels, SyncBatchNorm) calls it or
its documented compiled twin.

Forward, for the elements x_i of one normalization group of size M:

    mean = (1/M) sum_i x_i
    var  = (1/M) sum_i (x_i - mean)^2          (biased; two passes, never E[x^2] - E[x]^2)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd

Backward, given g = dL/dxhat:

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))

The backward is linear in g, and rstd is constant over the group, so a caller whose scale gamma is also
constant over the group (batch norm) passes g = dout and scale = gamma * rstd and never forms dout * gamma.

Both passes also come in two halves, for a group spread over several processes (SyncBatchNorm): forward,
`moments` then `normalize_with_stats` with statistics merged over the processes; backward, `backward_sums`
then `normalize_backward_from_sums` with the sums added up over the processes.

Compiled twin: `normlab.kernels.normalize` computes the same forward (fused with the affine) and
backward in one pass for the statistics and one elementwise pass, accumulating in float64; the layers
choose it through `compiled_twin` (numba installed, or `backend=` / NORMLAB_BACKEND). Tests hold the two
equal to 1e-6 (float32) and 1e-12 (float64).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import NamedTuple

import numpy as np

from normlab.kernels.backend import compiled_kernels

Axes = tuple[int, ...]
COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_LARGEST = {dtype: float(np.finfo(dtype).max) for dtype in COMPILED_DTYPES}


class Normalized(NamedTuple):
    """What `normalize` returns. `mean`, `var` and `rstd` keep the reduced axes (size 1)."""

    xhat: np.ndarray  # same shape as x
    mean: np.ndarray  # x.shape with `axes` set to 1
    var: np.ndarray  # biased variance, same shape as mean
    rstd: np.ndarray  # 1 / sqrt(var + eps), same shape as mean


class NormalizeGrad(NamedTuple):
    """What `normalize_backward` returns: dx and the two reductions it computed on the way."""

    dx: np.ndarray  # same shape as g
    g_sum: np.ndarray  # sum of g over axes (keepdims)
    gxhat_sum: np.ndarray  # sum of g * xhat over axes (keepdims)


def group_size(shape: tuple[int, ...], axes: Axes) -> int:
    """Number of elements in one normalization group: the product of the sizes of `axes`."""
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def _pivot(x: np.ndarray, axes: Axes) -> np.ndarray:
    """One element of every group (its first), shaped like the group statistics.

    Subtracting a value from inside the group before summing makes the sum small, so a float32 mean of
    data far from zero (mean 1e4, std 1e-2) stays accurate; for values within a factor of two of the pivot
    the subtraction is exact (Sterbenz).
    """
    index = tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))
    return x[index]


def normalize(x: np.ndarray, axes: Axes, eps: float) -> Normalized:
    """Normalize `x` to zero mean and unit variance over `axes`.

    Inputs:
    - x: float array of any shape.
    - axes: the axes that form one normalization group (e.g. (0,) for batch norm on (N, D)).
    - eps: added to the variance before the square root.

    Returns a `Normalized` (xhat, mean, var, rstd). The statistics are in x's dtype; the mean is computed
    on pivot-shifted data and the variance from centered data, so neither suffers cancellation.

    Any finite x works, however large: a group whose sums overflow x's dtype (float32 deviations above
    about 1.8e19) is recomputed in float64, scaled by a power of two (`_normalize_wide`); its xhat and rstd
    are then exact to x's precision, while var, which is then beyond x's range, is inf. Half-precision
    inputs (float16, bfloat16) are normalized with float32 statistics, as the frameworks do: mean, var
    and rstd are float32, xhat is in x's dtype.
    """
    if is_half(x.dtype):
        wide = normalize(x.astype(np.float32), axes, eps)
        return wide._replace(xhat=wide.xhat.astype(x.dtype))
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow here is caught below and redone
        xmu, mean, var = _centered(x, axes)
    if not _finite(mean, var):
        return _normalize_wide(x, axes, eps)
    rstd = inverse_std(var, eps, x.dtype)
    xmu *= rstd  # xhat, in the same buffer
    return Normalized(xhat=xmu, mean=mean, var=var, rstd=rstd)


def is_half(dtype: np.dtype) -> bool:
    """float16 or bfloat16 (ml_dtypes): floating types narrower than float32, normalized in float32."""
    return np.dtype(dtype).itemsize < 4


def _finite(*arrays: np.ndarray) -> bool:
    """Every value finite: an O(groups) check on the statistics, so the wide path costs only when needed."""
    return all(bool(np.isfinite(a).all()) for a in arrays)


def _moments_wide(x: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first pass of `_normalize_wide`, in float64 on x scaled per group: (x - mean, mean, var, scale),
    the first three in the scaled units (multiply the mean by scale, the variance by scale**2).

    Every group whose largest magnitude exceeds 2^400 is divided by a power of two near it (exact), so no
    square overflows; the other groups have scale 1.
    """
    x64 = x.astype(np.float64)
    amax = np.max(np.abs(x64), axis=axes, keepdims=True)  # (stats shape)
    with np.errstate(invalid="ignore"):
        huge = amax > 2.0**400  # below this, float64 squares of differences and their sums cannot overflow
    _, exponent = np.frexp(np.where(huge, amax, 1.0))
    scale = np.where(huge, np.ldexp(1.0, exponent - 1), 1.0)  # power of two <= amax, or 1
    xmu, mean_s, var_s = _centered(x64 / scale, axes)
    return xmu, mean_s, var_s, scale


def _normalize_wide(x: np.ndarray, axes: Axes, eps: float) -> Normalized:
    """`normalize` for a group whose sums overflow x's dtype: in float64, every group whose largest
    magnitude exceeds 2^400 divided by a power of two near it (exact), so no square overflows.

    A non-finite x (inf, NaN) is not rescued: its statistics are NaN, as in the fast path.
    """
    xmu, mean_s, var_s, scale = _moments_wide(x, axes)
    tiny = np.finfo(np.float64).tiny
    with np.errstate(over="ignore", under="ignore"):
        eps_s = np.maximum(eps / (scale * scale), tiny)  # eps in the scaled units, never 0
        rstd_s = inverse_std(var_s, eps_s, np.float64)
        var = var_s * scale * scale  # inf where the variance exceeds float64
        rstd = np.where(np.isfinite(var), inverse_std(var, eps, np.float64), rstd_s / scale)
        xmu *= rstd_s
        return Normalized(
            xhat=xmu.astype(x.dtype), mean=(mean_s * scale).astype(x.dtype), var=var.astype(x.dtype),
            rstd=rstd.astype(x.dtype),
        )


def compiled_statistics_in_range(kernels: ModuleType, stats, dtype: np.dtype, count: int) -> bool:
    """Whether a compiled forward's statistics (`GroupStatistics`, from `kernels`) can be trusted for x of
    `dtype` with `count` values per group: every value finite and no group near the top of the dtype's range.

    The kernels form x - pivot and (x - pivot) - shift in x's dtype; both stay finite when every |x| is
    below half the dtype's largest value M. Any group with max |x| >= M / 2 has
    sqrt(var) + |mean| >= rms(x) >= M / (2 sqrt(count)), so checking that bound on the O(groups) statistics
    (one compiled loop, about a microsecond) catches every such group, and rarely a harmless one; the
    caller then falls back to the NumPy core, which rescales.
    """
    bound = _LARGEST[dtype] / (2.0 * math.sqrt(count))
    size = kernels.statistics_size(stats.pivot, stats.shift, stats.var)
    return bool(size < bound)  # False for NaN too


def moments(x: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray]:
    """The mean and biased variance of `x` over `axes` (keepdims), computed as `normalize` computes them.

    For callers that combine statistics before normalizing (SyncBatchNorm merges every process's
    moments, then calls `normalize_with_stats` with the merged ones).
    """
    if is_half(x.dtype):
        return moments(x.astype(np.float32), axes)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow here is caught below and redone
        _, mean, var = _centered(x, axes)
    if not _finite(mean, var):
        _, mean_s, var_s, scale = _moments_wide(x, axes)
        with np.errstate(over="ignore"):
            return (mean_s * scale).astype(x.dtype), (var_s * scale * scale).astype(x.dtype)
    return mean, var


def normalize_with_stats(x: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float) -> Normalized:
    """Normalize `x` with statistics computed elsewhere: xhat = (x - mean) / sqrt(var + eps).

    Inputs:
    - x: float array of any shape.
    - mean, var: broadcastable to x (the shape `normalize` returns them in), e.g. statistics merged over
      several processes.
    - eps: added to the variance before the square root.

    Returns a `Normalized` whose mean and var are the ones given and whose xhat and rstd are in x's dtype.
    """
    rstd = inverse_std(var, eps, x.dtype)
    xhat = np.subtract(x, mean, dtype=x.dtype)  # a new array we scale in place
    xhat *= rstd
    return Normalized(xhat=xhat, mean=mean, var=var, rstd=rstd)


def inverse_std(var: np.ndarray, eps: float, dtype: np.dtype) -> np.ndarray:
    """rstd = 1 / sqrt(var + eps), in `dtype`."""
    rstd = 1.0 / np.sqrt(var + eps)
    return rstd.astype(dtype, copy=False)


def _centered(x: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x - mean, mean, biased var): the first pass of `normalize`, x - mean in a new array."""
    m = group_size(x.shape, axes)
    pivot = _pivot(x, axes)  # shape of the statistics
    xmu = np.subtract(x, pivot)  # x - pivot, a new array we centre in place
    shift = xmu.sum(axis=axes, keepdims=True)
    shift /= m  # mean(x - pivot)
    xmu -= shift  # x - mean
    var = _sum_of_squares(xmu, axes)
    var /= m
    return xmu, pivot + shift, var


def normalize_backward(g: np.ndarray, xhat: np.ndarray, scale: np.ndarray, axes: Axes) -> NormalizeGrad:
    """Backward of `normalize`: dx = scale * (g - mean(g) - xhat * mean(g * xhat)) over `axes`.

    Inputs:
    - g: upstream gradient with respect to xhat (or dout, see the module docstring), shape of xhat.
    - xhat: the normalized input from the forward pass.
    - scale: rstd, or rstd times a per-group constant factor; broadcastable to xhat.
    - axes: the normalization axes used in the forward pass.

    Returns a `NormalizeGrad` (dx, sum of g, sum of g * xhat): batch norm reads dbeta and dgamma off the
    two sums instead of reducing again.
    """
    if is_half(g.dtype):  # float32 arithmetic (g and xhat converted once), dx rounded once to g's dtype
        g32, xhat32 = g.astype(np.float32), xhat.astype(np.float32)
        g_sum, gxhat_sum = backward_sums(g32, xhat32, axes)
        dx = normalize_backward_from_sums(g32, xhat32, scale, g_sum, gxhat_sum, group_size(xhat.shape, axes))
        return NormalizeGrad(dx=dx.astype(g.dtype), g_sum=g_sum, gxhat_sum=gxhat_sum)
    g_sum, gxhat_sum = backward_sums(g, xhat, axes)
    dx = normalize_backward_from_sums(g, xhat, scale, g_sum, gxhat_sum, group_size(xhat.shape, axes))
    return NormalizeGrad(dx=dx, g_sum=g_sum, gxhat_sum=gxhat_sum)


def backward_sums(g: np.ndarray, xhat: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray]:
    """The two reductions of the backward: (sum of g, sum of g * xhat) over `axes`, keepdims; float32 for
    half-precision g (a float16 sum over a batch overflows at 65504)."""
    if is_half(g.dtype):
        g, xhat = g.astype(np.float32), xhat.astype(np.float32)
    return g.sum(axis=axes, keepdims=True), sum_of_products(g, xhat, axes)


def normalize_backward_from_sums(
    g: np.ndarray, xhat: np.ndarray, scale: np.ndarray, g_sum: np.ndarray, gxhat_sum: np.ndarray, m: int
) -> np.ndarray:
    """dx = scale * (g - g_sum / m - xhat * gxhat_sum / m), given the two sums over a group of m values.

    The group may be larger than this array: SyncBatchNorm passes the sums and the count added up over
    every process, and gets this process's part of the global batch's dx.

    Inputs:
    - g, xhat: same shape (this process's values).
    - scale: rstd, or rstd times a per-group constant; broadcastable to xhat.
    - g_sum, gxhat_sum: the group sums (shape of the statistics), in g's dtype; m: the group size.

    Returns dx, shape of g.
    """
    dx = xhat * (gxhat_sum / m)  # xhat * mean(g * xhat)
    np.subtract(g, dx, out=dx)
    dx -= g_sum / m
    dx *= scale
    return dx


def scale_shift(xhat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """out = gamma * xhat + beta, with gamma and beta already shaped to broadcast against xhat."""
    out = xhat * gamma
    out += beta
    return out


def normalize_scale_shift_backward(
    dout: np.ndarray,
    xhat: np.ndarray,
    rstd: np.ndarray,
    gamma: np.ndarray,
    stat_axes: Axes,
    param_axes: Axes,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of out = gamma * normalize(x, stat_axes) + beta.

    Inputs:
    - dout, xhat: same shape.
    - rstd: the forward's 1 / sqrt(var + eps), reduced over stat_axes (keepdims).
    - gamma: broadcastable to xhat, reduced over param_axes (keepdims).
    - stat_axes: the axes normalized over; param_axes: the axes gamma and beta are shared over.

    Returns (dx, dgamma, dbeta), dgamma and dbeta shaped like gamma, in dout's dtype (computed in float32
    for half-precision dout).
    """
    if is_half(dout.dtype):
        wide = normalize_scale_shift_backward(
            *(a.astype(np.float32) for a in (dout, xhat, rstd, gamma)), stat_axes, param_axes
        )
        return tuple(a.astype(dout.dtype) for a in wide)
    gamma_is_constant_per_group = all(gamma.shape[a] == 1 for a in stat_axes)
    if gamma_is_constant_per_group and tuple(stat_axes) == tuple(param_axes):
        # Batch norm: dL/dxhat = dout * gamma with gamma constant per group, so pass dout and fold gamma
        # into the scale; the two sums the core computes are dbeta and dgamma.
        grad = normalize_backward(dout, xhat, gamma * rstd, stat_axes)
        return grad.dx, grad.gxhat_sum, grad.g_sum
    dx = normalize_backward(dout * gamma, xhat, rstd, stat_axes).dx
    dgamma = sum_of_products(dout, xhat, param_axes)
    dbeta = dout.sum(axis=param_axes, keepdims=True)
    return dx, dgamma, dbeta


def _einsum_subscripts(ndim: int, axes: Axes) -> tuple[str, str]:
    letters = "abcdefghijklmnopqrstuvw"[:ndim]
    kept = "".join(letters[a] for a in range(ndim) if a not in axes)
    return letters, kept


def sum_of_products(a: np.ndarray, b: np.ndarray, axes: Axes) -> np.ndarray:
    """sum(a * b) over axes with keepdims, without materializing a * b."""
    full, kept = _einsum_subscripts(a.ndim, axes)
    reduced = np.einsum(f"{full},{full}->{kept}", a, b)
    return np.expand_dims(reduced, axes)


def _sum_of_squares(a: np.ndarray, axes: Axes) -> np.ndarray:
    return sum_of_products(a, a, axes)


def compiled_twin(backend: str, x: np.ndarray) -> ModuleType | None:
    """The compiled kernels module when `backend` ("auto", "numpy" or "numba"; see
    `normlab.kernels.backend`: "auto" compiles only large inputs) resolves to numba for x and x is float32
    or float64; None means: run NumPy.

    An unknown backend raises whatever the dtype, so a typo never goes unnoticed.
    """
    kernels = compiled_kernels(backend, x.size)
    return kernels if x.dtype in COMPILED_DTYPES else None
