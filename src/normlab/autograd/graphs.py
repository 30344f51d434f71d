"""Batch norm, layer norm and group norm as small named steps on the autograd engine.

The steps and their names are those of the staged backward (`normlab.functional.staged.STAGED_NODES`):

    mu = mean(x)   xmu = x - mu   sq = xmu**2   var = mean(sq)   sqrtvar = sqrt(var + eps)
    ivar = 1 / sqrtvar   xhat = xmu * ivar   gammax = gamma * xhat   out = gammax + beta

These graphs exist to derive the backward pass and to draw it; they are tested equal to the functional
layers' staged and closed-form backward passes, and are never used to compute a normalization.
Group norm adds two reshapes around the steps: xg groups the channels of x, and xhat ungroups xhatg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.autograd.tensor import Axes, Tensor
from normlab.checks import check_positive_int
from normlab.functional._checks import check_float_array, check_param, check_positive, check_same_shape

KINDS = ("batchnorm", "layernorm", "groupnorm")
TITLES = {"batchnorm": "Batch norm", "layernorm": "Layer norm", "groupnorm": "Group norm"}


@dataclass(frozen=True)
class NormGraph:
    """A normalization built on the engine: its inputs, its named nodes and its output."""

    kind: str  # one of KINDS
    x: Tensor
    gamma: Tensor  # shaped to broadcast against x: (D,), (C, 1, 1) or x.shape[1:]
    beta: Tensor
    out: Tensor
    nodes: dict[str, Tensor]  # every named intermediate, in forward order
    eps: float
    stat_axes: Axes  # the axes the statistics run over (of xg for group norm)

    def _repr_svg_(self) -> str | None:
        """Jupyter shows the graph inline (see GraphView._repr_svg_)."""
        from normlab.autograd.steps import GraphView

        return GraphView(self.out)._repr_svg_()

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the engine's backward from out with upstream gradient `dout` (out's shape).

        Returns (dx, dgamma, dbeta) shaped as the functional layer returns them: dgamma and dbeta of
        shape (C,) for batch and group norm, x.shape[1:] for layer norm.
        """
        dout = check_same_shape("dout", dout, self.out.shape)
        self.out.backward(dout)
        param_shape = (self.x.shape[1],) if self.kind != "layernorm" else self.x.shape[1:]
        return self.x.grad, self.gamma.grad.reshape(param_shape), self.beta.grad.reshape(param_shape)


def batchnorm_graph(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5) -> NormGraph:
    """Batch norm in training mode as a graph of named steps.

    Inputs:
    - x: (N, D) or (N, C, H, W) float array (any (N, C, *)).
    - gamma, beta: (C,).
    - eps: > 0.

    Returns a NormGraph; gamma and beta become tensors of shape (C,) + (1,) * (x.ndim - 2).
    """
    xt, gt, bt = _leaves(x, gamma, beta, eps, per_channel=True)
    stat_axes = (0, *range(2, xt.ndim))
    nodes = _staged_steps(xt, gt, bt, stat_axes, eps)
    return NormGraph("batchnorm", xt, gt, bt, nodes["out"], nodes, eps, stat_axes)


def layernorm_graph(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5) -> NormGraph:
    """Layer norm as a graph of named steps: every sample normalized over all its features.

    Inputs:
    - x: (N, *F) float array with at least 2 dimensions.
    - gamma, beta: F, the elementwise affine of torch.nn.LayerNorm.
    - eps: > 0.
    """
    xt, gt, bt = _leaves(x, gamma, beta, eps, per_channel=False)
    stat_axes = tuple(range(1, xt.ndim))
    nodes = _staged_steps(xt, gt, bt, stat_axes, eps)
    return NormGraph("layernorm", xt, gt, bt, nodes["out"], nodes, eps, stat_axes)


def groupnorm_graph(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int, *, eps: float = 1e-5
) -> NormGraph:
    """Group norm as a graph of named steps: the channels of each sample split into `num_groups` groups,
    each normalized over its channels and positions.

    Inputs:
    - x: (N, C, *S) float array.
    - gamma, beta: (C,).
    - num_groups: G, a positive divisor of C.
    - eps: > 0.

    The steps run on xg = x.reshape(N, G, C // G * prod(S)); xhat = xhatg.reshape(x.shape).
    """
    xt, gt, bt = _leaves(x, gamma, beta, eps, per_channel=True)
    c = xt.shape[1]
    check_positive_int("num_groups", num_groups)
    if c % num_groups:
        raise ValueError(f"num_groups must divide the number of channels C={c}, got num_groups={num_groups}")
    xg = xt.reshape(xt.shape[0], num_groups, -1).named("xg")  # (N, G, C // G * prod(S))
    stat_axes = (2,)
    nodes = {"xg": xg, **_staged_steps(xg, gt, bt, stat_axes, eps, ungroup=xt.shape)}
    return NormGraph("groupnorm", xt, gt, bt, nodes["out"], nodes, eps, stat_axes)


def _staged_steps(
    x: Tensor, gamma: Tensor, beta: Tensor, axes: Axes, eps: float, ungroup: tuple[int, ...] | None = None
) -> dict[str, Tensor]:
    """The staged graph on x, statistics over `axes`; with `ungroup`, xhat is reshaped to it before the
    affine (group norm)."""
    mu = x.mean(axis=axes, keepdims=True).named("mu")
    xmu = (x - mu).named("xmu")
    sq = (xmu**2).named("sq")
    var = sq.mean(axis=axes, keepdims=True).named("var")
    sqrtvar = (var + eps).sqrt().named("sqrtvar")
    ivar = (1.0 / sqrtvar).named("ivar")
    xhat = (xmu * ivar).named("xhat")
    steps = {"mu": mu, "xmu": xmu, "sq": sq, "var": var, "sqrtvar": sqrtvar, "ivar": ivar}
    if ungroup is not None:
        steps["xhatg"] = xhat.named("xhatg")
        xhat = xhat.reshape(ungroup).named("xhat")
    gammax = (gamma * xhat).named("gammax")
    out = (gammax + beta).named("out")
    return {**steps, "xhat": xhat, "gammax": gammax, "out": out}


def _leaves(x, gamma, beta, eps, per_channel: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The checked inputs as tensors: gamma and beta (C,) shaped (C, 1, ...) to broadcast `per_channel`,
    else of shape x.shape[1:]."""
    x = check_float_array("x", x, min_ndim=2, layout="(N, C, ...)")
    check_positive("eps", eps)
    param_shape = (x.shape[1],) if per_channel else x.shape[1:]
    gamma = check_param("gamma", gamma, param_shape, x.dtype)
    beta = check_param("beta", beta, param_shape, x.dtype)
    if per_channel:
        gamma, beta = (a.reshape((x.shape[1],) + (1,) * (x.ndim - 2)) for a in (gamma, beta))
    return Tensor(x, "x"), Tensor(gamma, "gamma"), Tensor(beta, "beta")


def sample_graph(kind: str, *, rng: np.random.Generator, shape: tuple[int, ...] | None = None,
                 num_groups: int = 2, dtype=np.float64) -> NormGraph:
    """A graph of `kind` on a random batch, after a forward and a backward pass with a random upstream
    gradient: what `normlab graph` draws and `normlab explain` walks.

    Inputs:
    - kind: "batchnorm", "layernorm" or "groupnorm".
    - rng: draws x (mean 1, std 2, so the normalization visibly moves it), gamma near 1, beta near 0 and
      dout (standard normal: with dout = 1 batch norm's dx is exactly zero, which draws nothing).
    - shape: of x; (4, 3) by default, (2, 4, 2, 2) for group norm.
    - num_groups: for group norm.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if shape is None:
        shape = (2, 4, 2, 2) if kind == "groupnorm" else (4, 3)
    shape = tuple(shape)
    if len(shape) < 2 or any(n < 1 for n in shape):
        raise ValueError(f"shape must have at least 2 positive sizes (N, C, ...), got {shape}")
    x = (1.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
    param_shape = shape[1:] if kind == "layernorm" else (shape[1],)
    gamma = (1.0 + 0.5 * rng.standard_normal(param_shape)).astype(dtype)
    beta = (0.5 * rng.standard_normal(param_shape)).astype(dtype)
    if kind == "batchnorm":
        graph = batchnorm_graph(x, gamma, beta)
    elif kind == "layernorm":
        graph = layernorm_graph(x, gamma, beta)
    else:
        graph = groupnorm_graph(x, gamma, beta, num_groups)
    graph.backward(rng.standard_normal(shape).astype(dtype))
    return graph
