"""The normalization backward walked node by node on its computational graph.

The forward pass of out = gamma * (x - mean) / sqrt(var + eps) + beta, broken into the smallest steps
(the names of CS231n's batch norm graph):

    mu      = mean(x)              over the statistics axes
    xmu     = x - mu
    sq      = xmu ** 2
    var     = mean(sq)
    sqrtvar = sqrt(var + eps)
    ivar    = 1 / sqrtvar
    xhat    = xmu * ivar
    gammax  = gamma * xhat
    out     = gammax + beta

The backward visits the nodes in reverse, and every gradient is the node's local gradient times the
gradient flowing into it from above. It teaches; `normalize_backward` is the closed form and is fast.
Tests hold them equal to 1e-12 in float64.
"""

from __future__ import annotations

import numpy as np

from normlab.functional._checks import check_cache, check_same_shape
from normlab.functional.normalize import Axes, NormCache, group_size

# The intermediate nodes of the graph above, in forward order. `normlab.autograd` builds its graphs with
# these names, and a test holds this list equal to the names assigned in `staged_backward`.
STAGED_NODES = ("mu", "xmu", "sq", "var", "sqrtvar", "ivar", "xhat", "gammax", "out")


def staged_backward(
    dout: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray,
    eps: float,
    stat_axes: Axes,
    param_axes: Axes,
    constant_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of the staged graph above.

    Inputs:
    - dout, x: same shape, e.g. (N, D).
    - gamma: broadcastable to x, e.g. (1, D); shared over param_axes.
    - eps: the forward's eps.
    - stat_axes: axes the statistics run over; param_axes: axes gamma and beta are shared over.
    - constant_stats: (mean, var) when the statistics were constants rather than graph nodes (batch norm
      in evaluation mode, using running statistics): the graph then ends at xmu.

    Returns (dx, dgamma, dbeta), dgamma and dbeta shaped like gamma.
    """
    m = group_size(x.shape, stat_axes)
    # Forward, node by node (recomputed from the cached input: cheap, and every name is visible here).
    if constant_stats is None:
        mu = x.sum(axis=stat_axes, keepdims=True) / m
    else:
        mu, var = constant_stats
    xmu = x - mu
    sq = xmu**2
    if constant_stats is None:
        var = sq.sum(axis=stat_axes, keepdims=True) / m
    sqrtvar = np.sqrt(var + eps)
    ivar = 1.0 / sqrtvar
    xhat = xmu * ivar

    # Backward, in reverse order.
    # out = gammax + beta: the local gradient is 1 for both; beta was broadcast, so sum over param_axes.
    dbeta = dout.sum(axis=param_axes, keepdims=True)
    dgammax = dout
    # gammax = gamma * xhat
    dgamma = (dgammax * xhat).sum(axis=param_axes, keepdims=True)
    dxhat = dgammax * gamma
    # xhat = xmu * ivar: xmu feeds xhat directly and (through var) again below
    divar = (dxhat * xmu).sum(axis=stat_axes, keepdims=True)
    dxmu1 = dxhat * ivar
    if constant_stats is not None:
        return dxmu1, dgamma, dbeta
    # ivar = 1 / sqrtvar
    dsqrtvar = -1.0 / sqrtvar**2 * divar
    # sqrtvar = sqrt(var + eps)
    dvar = 0.5 / sqrtvar * dsqrtvar
    # var = mean(sq): every element of the group receives 1/m of dvar
    dsq = np.ones_like(sq) / m * dvar
    # sq = xmu ** 2
    dxmu2 = 2 * xmu * dsq
    # xmu = x - mu: x receives both paths into xmu; mu receives their negated sum
    dx1 = dxmu1 + dxmu2
    dmu = -(dxmu1 + dxmu2).sum(axis=stat_axes, keepdims=True)
    # mu = mean(x)
    dx2 = np.ones_like(x) / m * dmu
    dx = dx1 + dx2
    return dx, dgamma, dbeta


def staged_backward_of(
    dout: np.ndarray, cache: NormCache, backward: str, *forwards: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`staged_backward` on a `NormCache` from one of `forwards` (errors name `backward`): (dx of the input's
    shape, dgamma and dbeta of gamma's own shape)."""
    check_cache(backward, cache, NormCache, *forwards)
    dout = check_same_shape("dout", dout, cache.shape).reshape(cache.x.shape)
    constant_stats = (cache.mean, cache.var) if cache.constant_stats else None
    dx, dgamma, dbeta = staged_backward(dout, cache.x, cache.gamma, cache.eps, cache.stat_axes, cache.param_axes,
                                        constant_stats)
    return dx.reshape(cache.shape), dgamma.reshape(cache.param_shape), dbeta.reshape(cache.param_shape)
