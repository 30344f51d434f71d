"""L2 regularization of a model's weights, leaving normalization parameters (gamma, beta) and biases
alone, as in CS231n: loss += 0.5 * reg * sum ||W||^2 over the weight matrices and filters."""

from __future__ import annotations

import numpy as np

from normlab.nn import Conv2d, Linear, Module, Parameter

# The layers whose `weight` is a weight matrix or filter bank. Chosen by inclusion: a normalization layer
# (batch, renorm, ghost, sync, layer, group, instance norm, and any added later) keeps its gamma undecayed.
WEIGHT_LAYERS = (Linear, Conv2d)


def weight_parameters(model: Module) -> list[Parameter]:
    """The `weight` of every Linear and Conv2d layer in the model. Biases and gamma / beta are not among them."""
    return [m.weight for _, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


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
