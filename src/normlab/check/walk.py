"""The staged normalization, forward and backward, with one mistake injected on request.

`normlab.check` explains a learner's wrong result by finding the known mistake that reproduces it: the
reference computed again with that mistake made. This walk is the graph of `normlab.functional.staged`
(the names of CS231n's batch norm graph) with a switch at every step where learners go wrong, so it is a
deliberate copy of the math, like `staged.py` and the autograd graphs: without a mistake, tests hold every
node equal to the autograd graph's values and gradients and its outputs equal to the functional core.

    mu = mean(x)   xmu = x - mu   sq = xmu**2   var = mean(sq)   sqrtvar = sqrt(var + eps)
    ivar = 1 / sqrtvar   xhat = xmu * ivar   gammax = gamma * xhat   out = gammax + beta

Backward, in CS231n's names: dbeta, dgamma, dxhat, divar, dsqrtvar, dvar, dsq, dxmu2, dxmu1, dxmu
(= dxmu1 + dxmu2, kept under both names), dx1 (= dxmu), dmu, dx2, dx.
"""

from __future__ import annotations

import numpy as np

from normlab.check.mistakes import CATALOGUE
from normlab.functional.normalize import Axes, group_size

# Every flag `walk` understands: the catalogue's (`normlab.check.mistakes`, which says what each means in words).
FLAGS = frozenset().union(*(m.flags for m in CATALOGUE))

FORWARD_NODES = ("mu", "xmu", "sq", "var", "sqrtvar", "ivar", "xhat", "gammax", "out")
# In the order a person working backward writes them (CS231n's and staged.py's order).
BACKWARD_NODES = ("dbeta", "dgamma", "dxhat", "divar", "dxmu1", "dsqrtvar", "dvar", "dsq", "dxmu2", "dxmu",
                  "dx1", "dmu", "dx2", "dx")


def walk(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dout: np.ndarray | None, eps: float, stat_axes: Axes,
         param_axes: Axes, *, constant_stats: tuple[np.ndarray, np.ndarray] | None = None,
         mistakes: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Every node of the staged graph, forward and (with dout) backward, with `mistakes` made.

    Inputs:
    - x, dout: same shape, e.g. (N, D), (N, C, H, W) or grouped (N, G, C // G, H, W); dout None: forward only.
    - gamma, beta: broadcastable to x with keepdims, e.g. (1, D); shared over param_axes.
    - eps: the forward's eps.
    - stat_axes: the axes the statistics run over; param_axes: the axes gamma and beta are shared over.
    - constant_stats: (mean, var) broadcastable to x: evaluation mode with running statistics.
    - mistakes: a subset of FLAGS.

    Returns {node name: array} in forward then backward order; gradients of gamma and beta keep dims.
    """
    unknown = set(mistakes) - FLAGS
    if unknown:
        raise ValueError(f"mistakes must be a subset of walk.FLAGS, got unknown {sorted(unknown)}")
    m = group_size(x.shape, stat_axes)
    n: dict[str, np.ndarray] = {}
    if constant_stats is None:
        n["mu"] = x.sum(axis=stat_axes, keepdims=True) / m
    else:
        n["mu"], var = constant_stats
    n["xmu"] = x - n["mu"]
    n["sq"] = n["xmu"] ** 2
    if constant_stats is None:
        sq = x**2 if "var_uncentred" in mistakes else n["sq"]
        var = sq.sum(axis=stat_axes, keepdims=True) / (m - 1 if "var_unbiased" in mistakes else m)
    n["var"] = var
    n["sqrtvar"] = _sqrtvar(var, eps, mistakes)
    n["ivar"] = 1.0 / n["sqrtvar"]
    n["xhat"] = n["xmu"] * n["ivar"]
    n["gammax"] = gamma * n["xhat"]
    n["out"] = n["gammax"] + beta
    if dout is None:
        return n

    sqrtvar, ivar = n["sqrtvar"], n["ivar"]
    if "eps_missing_backward" in mistakes:  # the forward was right; the backward recomputes sqrt(var)
        sqrtvar = np.sqrt(var)
        ivar = 1.0 / sqrtvar
    xhat, xmu = n["xmu"] * ivar, n["xmu"]
    reduce_param = np.mean if "dbeta_mean" in mistakes else np.sum
    n["dbeta"] = reduce_param(dout, axis=param_axes, keepdims=True)
    reduce_param = np.mean if "dgamma_mean" in mistakes else np.sum
    n["dgamma"] = reduce_param(dout * xhat, axis=param_axes, keepdims=True)
    n["dxhat"] = dout if "dxhat_no_gamma" in mistakes else dout * gamma
    if "dxhat_summed" in mistakes:
        n["dxhat"] = n["dxhat"].sum(axis=stat_axes, keepdims=True)
    if "divar_not_summed" in mistakes:
        n["divar"] = n["dxhat"] * xmu
    else:
        n["divar"] = (np.mean if "divar_mean" in mistakes else np.sum)(n["dxhat"] * xmu, axis=stat_axes, keepdims=True)
    n["dxmu1"] = n["dxhat"] * ivar
    if constant_stats is not None:
        n["dxmu"] = n["dx1"] = n["dx"] = np.broadcast_to(n["dxmu1"], x.shape)
        return n
    if "dsqrtvar_squared_twice" in mistakes:
        n["dsqrtvar"] = -1.0 / sqrtvar**4 * n["divar"]
    else:
        n["dsqrtvar"] = (1.0 if "dsqrtvar_sign" in mistakes else -1.0) / sqrtvar**2 * n["divar"]
    n["dvar"] = (1.0 if "dvar_no_half" in mistakes else 0.5) / sqrtvar * n["dsqrtvar"]
    if "dvar_eps_missing" in mistakes:  # eps forgotten in this one place
        n["dvar"] = 0.5 / np.sqrt(var) * n["dsqrtvar"]
    n["dsq"] = np.ones_like(n["sq"]) / (1 if "dsq_no_1_over_m" in mistakes else m) * n["dvar"]
    n["dxmu2"] = 2 * xmu * n["dsq"]
    n["dxmu"] = n["dxmu1"] if "dxmu2_missing" in mistakes else n["dxmu1"] + n["dxmu2"]
    n["dx1"] = n["dxmu"]
    n["dmu"] = (1.0 if "dmu_sign" in mistakes else -1.0) * n["dxmu"].sum(axis=stat_axes, keepdims=True)
    n["dx2"] = np.ones_like(x) / (1 if "dx2_no_1_over_m" in mistakes else m) * n["dmu"]
    n["dx"] = n["dx1"] if "dmu_missing" in mistakes else n["dx1"] + n["dx2"]
    return n


def _sqrtvar(var: np.ndarray, eps: float, mistakes: frozenset[str]) -> np.ndarray:
    if "eps_missing" in mistakes:
        return np.sqrt(var)
    if "eps_outside_sqrt" in mistakes:
        return np.sqrt(var) + eps
    if "var_not_sqrt" in mistakes:
        return var + eps
    return np.sqrt(var + eps)
