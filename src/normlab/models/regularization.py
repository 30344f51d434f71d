"""L2 regularization of a model's weights, leaving normalization parameters (gamma, beta) and biases
alone, as in CS231n: loss += 0.5 * reg * sum ||W||^2 over the weight matrices and filters."""

from __future__ import annotations

import numpy as np

from normlab.nn import (
    BatchNorm1d,
    BatchNorm2d,
    BatchRenorm1d,
    BatchRenorm2d,
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    GroupNorm,
    LayerNorm,
    Module,
    Parameter,
)

NORMALIZATION_MODULES = (BatchNorm1d, BatchNorm2d, BatchRenorm1d, BatchRenorm2d, GhostBatchNorm1d, GhostBatchNorm2d,
                         LayerNorm, GroupNorm)


def weight_parameters(model: Module) -> list[Parameter]:
    """The parameters named `weight` of every module that is not a normalization layer: the weights of
    Linear (and convolution) layers. Biases and gamma / beta are not among them."""
    return [p for _, m in model.named_modules() if not isinstance(m, NORMALIZATION_MODULES)
            for name, p in m._parameters.items() if name == "weight" and p is not None]


def l2_penalty(model: Module, reg: float) -> float:
    """0.5 * reg * the sum of squares of every weight (in float64)."""
    if reg == 0:
        return 0.0
    return 0.5 * reg * float(sum(np.sum(np.square(p.data, dtype=np.float64)) for p in weight_parameters(model)))


def l2_penalty_backward(model: Module, reg: float) -> None:
    """Add the penalty's gradient, reg * W, into each weight's .grad."""
    if reg == 0:
        return
    for p in weight_parameters(model):
        p.accumulate_grad(reg * p.data)


def decay_groups(model: Module, weight_decay: float) -> list[dict]:
    """Parameter groups for an optimizer's weight decay (AdamW): the weights decay, everything else
    (biases, gamma, beta) gets weight_decay=0."""
    weights = weight_parameters(model)
    chosen = {id(p) for p in weights}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    groups = [{"params": weights, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups
