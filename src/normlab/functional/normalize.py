"""The one normalization core.

Batch norm, spatial batch norm, layer norm, group norm, instance norm, ghost batch norm and batch renorm
all normalize an array over a set of axes, then apply an affine over another set of axes. Each of them is
an axis mapping onto `normalize_affine` (and its backward) plus its own extras: every normalization in
normlab calls it (batch renorm with its `correction`) or its halves (SyncBatchNorm: the halves listed
below).

    mean = (1/M) sum_i x_i                     over the M elements of a group (`moments`)
    var  = (1/M) sum_i (x_i - mean)^2          (biased; two passes, never E[x^2] - E[x]^2)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    out  = gamma * xhat + beta                 gamma, beta shared over `param_axes`

Backward, given g = dL/dxhat = dout * gamma:

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))          means over the group
    dgamma = sum(dout * xhat), dbeta = sum(dout)                sums over param_axes

The backward is linear in g, and rstd is constant over the group, so where gamma is also constant over
the group (batch norm) the core passes g = dout and scale = gamma * rstd and reads dgamma and dbeta off
the two sums it needs anyway.

The compiled twin plugs in at one dispatch point, `normlab.kernels.backend.compiled_twin("normalize", ...)`
(the `backend=` argument, NORMLAB_BACKEND, "auto" by size; float32 and float64): `normalize_affine` asks
it, and a backward runs the twin when its forward did. This module imports no compiled kernel
(docs/architecture.md draws the dispatch).

Extras on top of the core: running statistics (batch norm, renorm, ghost: `batchnorm.update_running_stats`),
evaluation mode (statistics given, then constants of the backward), batch renorm's r and d (constants of
the affine, `NormCache.r`, `.d`), ghost batch norm's virtual batches (a view with a chunk axis; one cache
per run of equal chunks), SyncBatchNorm's merged moments and summed backward reductions (the halves
`moments` / `merge_moments` / `normalize_with_stats` and `backward_sums` / `normalize_backward_from_sums`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from normlab.functional._checks import check_cache, check_same_shape
from normlab.functional.moments import (
    Axes,
    centered,
    centered_wide,
    finite,
    group_size,
    inverse_std,
    is_half,
    moments,  # noqa: F401 - SyncBatchNorm's first half, imported from here with the others
    reduced_shape,
    sum_of_products,
)
from normlab.kernels.backend import compiled_twin

if TYPE_CHECKING:
    from normlab.kernels.statistics import GroupStatistics


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


# ---------------------------------------------------------------------------------------------------------
# Normalization: the statistics, then xhat.


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
        xmu, mean, var = centered(x, axes)
    if not finite(mean, var):
        return _normalize_wide(x, axes, eps)
    rstd = inverse_std(var, eps, x.dtype)
    xmu *= rstd  # xhat, in the same buffer
    return Normalized(xhat=xmu, mean=mean, var=var, rstd=rstd)


def _normalize_wide(x: np.ndarray, axes: Axes, eps: float) -> Normalized:
    """`normalize` for a group whose sums overflow x's dtype: in float64, every group whose largest
    magnitude exceeds 2^400 divided by a power of two near it (exact), so no square overflows.

    A non-finite x (inf, NaN) is not rescued: its statistics are NaN, as in the fast path.
    """
    xmu, mean_s, var_s, scale = centered_wide(x, axes)
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


def normalize_with_stats(x: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float) -> Normalized:
    """Normalize `x` with statistics computed elsewhere: xhat = (x - mean) / sqrt(var + eps).

    Inputs:
    - x: float array of any shape.
    - mean, var: broadcastable to x (the shape `normalize` returns them in): running statistics in
      evaluation, or statistics merged over several processes.
    - eps: added to the variance before the square root.

    Returns a `Normalized` whose mean and var are the ones given and whose xhat and rstd are in x's dtype.
    """
    rstd = inverse_std(var, eps, x.dtype)
    # a new array we scale in place; statistics of another dtype (float64, merged) are rounded to x's
    xhat = x - mean if mean.dtype == x.dtype else np.subtract(x, mean, dtype=x.dtype)
    xhat *= rstd
    return Normalized(xhat=xhat, mean=mean, var=var, rstd=rstd)


# ---------------------------------------------------------------------------------------------------------
# Its backward, whole and in halves.


def normalize_backward(g: np.ndarray, xhat: np.ndarray, scale: np.ndarray, axes: Axes) -> NormalizeGrad:
    """Backward of `normalize`: dx = scale * (g - mean(g) - xhat * mean(g * xhat)) over `axes`.

    Inputs:
    - g: upstream gradient with respect to xhat (or dout, see the module docstring), shape of xhat.
    - xhat: the normalized input from the forward pass.
    - scale: rstd, or rstd times a per-group constant factor; broadcastable to xhat.
    - axes: the normalization axes used in the forward pass.

    Returns a `NormalizeGrad` (dx, sum of g, sum of g * xhat): batch norm reads dbeta and dgamma off the
    two sums instead of reducing again. Half-precision g is computed in float32, dx rounded once.
    """
    wide_g, wide_xhat = (g.astype(np.float32), xhat.astype(np.float32)) if is_half(g.dtype) else (g, xhat)
    g_sum, gxhat_sum = backward_sums(wide_g, wide_xhat, axes)
    dx = normalize_backward_from_sums(wide_g, wide_xhat, scale, g_sum, gxhat_sum, group_size(xhat.shape, axes))
    return NormalizeGrad(dx=dx.astype(g.dtype, copy=False), g_sum=g_sum, gxhat_sum=gxhat_sum)


def backward_sums(g: np.ndarray, xhat: np.ndarray, axes: Axes) -> tuple[np.ndarray, np.ndarray]:
    """The two reductions of the backward: (sum of g, sum of g * xhat) over `axes`, keepdims; float32 for
    half-precision g (a float16 sum over a batch overflows at 65504)."""
    if is_half(g.dtype):
        g, xhat = g.astype(np.float32), xhat.astype(np.float32)
    return g.sum(axis=axes, keepdims=True), sum_of_products(g, xhat, axes)


def normalize_backward_from_sums(
    g: np.ndarray, xhat: np.ndarray, scale: np.ndarray, g_sum: np.ndarray, gxhat_sum: np.ndarray, m: int
) -> np.ndarray:
    """dx = scale * (g - g_sum / m - xhat * gxhat_sum / m), shape of g, from the two sums of `backward_sums`
    (in g's dtype) over a group of m values; g, xhat and scale as `normalize_backward` takes them.

    The group may be larger than this array: SyncBatchNorm passes the sums and the count added up over
    every process, and gets this process's part of the global batch's dx.
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


# ---------------------------------------------------------------------------------------------------------
# The parametric operation: normalize over stat_axes, affine over param_axes, one cache type.


@dataclass(frozen=True)
class NormCache:
    """What `normalize_affine_backward` needs, and which forward made it. Arrays are in the core's view of
    the input (V: groups and parameters as axes, e.g. (N, G, C // G, H, W) for group norm); statistics keep
    the reduced axes. In x's dtype, except float32 statistics for half-precision x.

    After a compiled forward `compiled` holds its float64 statistics, the backward runs compiled, and xhat
    (never written by the forward) is recomputed from x when read. Ghost batch norm's cache holds one
    cache per run of equal virtual batches in `parts` and no arrays of its own.
    """

    forward: str  # the forward that made it: every backward refuses another's cache
    shape: tuple[int, ...]  # the input's shape as the caller gave it: dx comes back in it
    x: np.ndarray | None = None  # V: the input, for the staged and the compiled backward
    saved_xhat: np.ndarray | None = None  # V: None after a compiled forward (read `xhat`)
    mean: np.ndarray | None = None  # V with stat_axes 1: batch (or given) mean
    var: np.ndarray | None = None  # V with stat_axes 1: biased variance
    rstd: np.ndarray | None = None  # V with stat_axes 1: 1 / sqrt(var + eps)
    gamma: np.ndarray | None = None  # V with param_axes 1: the scale (batch renorm: without r)
    eps: float = 0.0
    stat_axes: Axes = ()
    param_axes: Axes = ()
    param_shape: tuple[int, ...] = ()  # gamma's own shape: dgamma and dbeta come back in it
    constant_stats: bool = False  # statistics given (evaluation): constants of the backward
    layout: str | None = None  # the compiled twin's view of V ("channels", "rows"), read after a compiled forward
    compiled: GroupStatistics | None = None  # per group, from the compiled forward
    r: np.ndarray | None = None  # batch renorm: out = gamma * (xhat * r + d) + beta, r and d constants
    d: np.ndarray | None = None
    parts: tuple[NormCache, ...] = ()  # ghost batch norm: one cache per run of equal virtual batches

    @property
    def xhat(self) -> np.ndarray:
        """The normalized input (V): kept by the NumPy forward; after a compiled one, recomputed from x on
        every read (the compiled backward never reads it)."""
        if self.saved_xhat is not None:
            return self.saved_xhat
        if self.compiled is None:
            raise AttributeError(f"this {self.forward} cache keeps xhat in each of its parts (cache.parts[i].xhat)")
        twin = compiled_twin("normalize", "numba")
        return twin.normalized(self.layout, self.x, self.compiled, self.stat_axes[0])


def normalize_affine(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, stat_axes: Axes, param_axes: Axes, eps: float, *,
    forward: str, shape: tuple[int, ...] | None = None, layout: str | None = None, backend: str = "numpy",
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    correction: Callable[[Normalized], tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, NormCache]:
    """out = gamma * normalize(x, stat_axes) + beta, the forward of every normalization.

    Inputs:
    - x: the input viewed so that groups and parameters are axes (V), e.g. (N, G, C // G, H, W) for group
      norm; validated by the caller.
    - gamma, beta: the affine's own parameters, in x's dtype, of any shape with one value per position of V
      over its axes but param_axes (e.g. (C,)): seen as V with param_axes set to 1, shared over param_axes.
    - stat_axes: the axes of one normalization group; param_axes: the axes gamma and beta are shared over.
    - eps: added to the variance, > 0.
    - forward: the public forward calling, recorded in the cache (its backward checks it).
    - shape: the caller's input shape, a reshape of V (default V): out and dx come back in it.
    - layout: how the compiled twin sees V ("channels": (N, C, *S) per channel; "rows": a trailing run of
      statistics axes; see `normlab.kernels.normalize`), or None: NumPy only.
    - backend: "auto", "numpy" or "numba" (`normlab.kernels.backend`), checked even where it is not used.
    - stats: (mean, var), shaped like the statistics, to normalize with instead of the batch's (evaluation
      mode): they are then constants of the backward and the compiled twin is not used.
    - correction: batch renorm's, called with the `Normalized` batch: (r, d), broadcastable like gamma,
      constants of the backward, for out = gamma * (xhat * r + d) + beta (NumPy only).

    Returns (out of `shape` and x's dtype, NormCache).
    """
    shape = x.shape if shape is None else shape
    param_shape, affine_shape = gamma.shape, reduced_shape(x.shape, param_axes)  # dgamma comes back in gamma's shape
    gamma, beta = gamma.reshape(affine_shape), beta.reshape(affine_shape)
    twin = compiled_twin("normalize", backend, x)
    compiled = r = d = None
    if twin is not None and layout is not None and stats is None and correction is None:
        # None for values near the dtype's largest, which NumPy rescales below
        compiled = twin.forward(layout, x, gamma, beta, eps, stat_axes[0])
    if compiled is not None:
        out, compiled = compiled
        xhat, stats_shape = None, reduced_shape(x.shape, stat_axes)
        with np.errstate(over="ignore"):  # a variance beyond x's range is inf, as `normalize` gives it
            mean, var, rstd = (s.astype(x.dtype).reshape(stats_shape)
                               for s in (compiled.mean, compiled.var, compiled.rstd))
    else:
        normalized = normalize(x, stat_axes, eps) if stats is None else normalize_with_stats(x, *stats, eps)
        xhat, mean, var, rstd = normalized
        if correction is None:
            out = scale_shift(xhat, gamma, beta)
        else:
            r, d = correction(normalized)  # gamma * (xhat * r + d) + beta, folded into one scale and one shift
            # r and d are float32 for half-precision x (its statistics are), so round out back to x's dtype
            out = scale_shift(xhat, gamma * r, gamma * d + beta).astype(x.dtype, copy=False)
    cache = NormCache(forward, shape, x, xhat, mean, var, rstd, gamma, eps, stat_axes, param_axes, param_shape,
                      stats is not None, layout, compiled, r, d)
    return (out if shape == x.shape else out.reshape(shape)), cache


def normalize_affine_backward(
    dout: np.ndarray, cache: NormCache, backward: str, *forwards: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of `normalize_affine`: (dx, dgamma, dbeta).

    Inputs:
    - dout: upstream gradient of the caller's input shape (`cache.shape`).
    - cache: from one of `forwards`; anything else raises TypeError naming `backward`.
    - backward: the public backward calling (named in errors); forwards: the forwards it accepts.

    Returns dx of cache.shape, dgamma and dbeta of cache.param_shape, all in dout's dtype (computed in
    float32 for half-precision dout). In training, with g = dout * gamma (times r for batch renorm):

        dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))       means over stat_axes
        dgamma = sum(dout * (xhat * r + d)),  dbeta = sum(dout)     sums over param_axes

    With given statistics (evaluation) they are constants and dx = dout * gamma * rstd.
    """
    check_cache(backward, cache, NormCache, *forwards)
    dout = check_same_shape("dout", dout, cache.shape)
    view = dout if cache.shape == cache.x.shape else dout.reshape(cache.x.shape)
    if cache.compiled is not None and dout.dtype == cache.x.dtype:
        twin = compiled_twin("normalize", "numba")
        dx, dgamma, dbeta = twin.backward(cache.layout, view, cache.x, cache.compiled, cache.gamma,
                                          cache.stat_axes[0])
        dgamma, dbeta = dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)  # from float64 sums
    else:
        dx, dgamma, dbeta = _backward(view, cache)
    if cache.shape != cache.x.shape:
        dx = dx.reshape(cache.shape)
    return dx, dgamma.reshape(cache.param_shape), dbeta.reshape(cache.param_shape)


def _backward(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The NumPy backward on the view: (dx, dgamma, dbeta), the gradients of the parameters keepdims.
    Half-precision dout is computed in float32 and every result rounded once to its dtype."""
    if is_half(dout.dtype):
        wide = dataclasses.replace(cache, saved_xhat=cache.xhat.astype(np.float32), rstd=cache.rstd.astype(np.float32),
                                   gamma=cache.gamma.astype(np.float32))
        return tuple(a.astype(dout.dtype) for a in _backward(dout.astype(np.float32), wide))
    xhat, rstd, gamma = cache.xhat, cache.rstd, cache.gamma
    if cache.r is not None:
        gamma = gamma * cache.r  # dL/dxhat = dout * gamma * r: r is one more constant factor per channel
    stat_axes, param_axes = cache.stat_axes, cache.param_axes
    if cache.constant_stats:
        dx = dout * (gamma * rstd)
        dbeta, dgamma = backward_sums(dout, xhat, param_axes)
    elif stat_axes == param_axes or all(a in param_axes for a in stat_axes):
        # gamma constant per group (batch norm, ghost): pass dout and fold gamma into the scale; the two
        # sums the core computes on the way give dbeta and dgamma (one reduction pass for all three).
        dx, dbeta, dgamma = normalize_backward(dout, xhat, gamma * rstd, stat_axes)
        across_groups = tuple(a for a in param_axes if a not in stat_axes)  # ghost's virtual batches
        if across_groups:
            dbeta, dgamma = dbeta.sum(axis=across_groups, keepdims=True), dgamma.sum(axis=across_groups, keepdims=True)
    else:
        dx = normalize_backward(dout * gamma, xhat, rstd, stat_axes).dx
        dgamma, dbeta = sum_of_products(dout, xhat, param_axes), dout.sum(axis=param_axes, keepdims=True)
    if cache.r is not None:  # d(out)/d(gamma) = xhat * r + d
        dgamma = cache.r * dgamma + cache.d * dbeta
    return dx, dgamma, dbeta
