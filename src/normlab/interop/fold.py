"""Folding batch norm into the layer before it, for inference.

In evaluation a batch norm is a fixed per-channel affine map (`batchnorm_inference_affine`):
out = x * scale + shift, scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale.
Applied to the output of a layer whose output channel is axis 0 of its weight (Linear, Conv2d), it merges
into that layer's weight and bias:

    W' = W * scale           (scale broadcast along the output-channel axis 0)
    b' = b * scale + shift  = (b - running_mean) * scale + beta

and the batch norm becomes an Identity, so the names of the other layers (and their state dict keys)
stay the same. One matrix product less per layer, same predictions.

Which layers fold into what is three small tables, matched by exact type: `FOLD_TARGETS`, the affine
layer types; `FOLD_NORMS`, the batch norms (plain, renorm, ghost: all evaluate as plain batch norm); and
`FOLD_PAIRS`, for container types, which (affine child, norm child) name pairs follow each other in
their forward pass. Sequential (every two consecutive children) and ResidualBlock register at the end of
this file (the block's `shortcut`, a Sequential, folds by the Sequential rule); other layers register the
same way.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import numpy as np

from normlab import nn
from normlab.functional import batchnorm_inference_affine
from normlab.interop.registry import NAMED_SEQUENTIALS

# Layer types with `weight` (out_channels, ...) and `bias` (out_channels,) or None.
FOLD_TARGETS: set[type] = {nn.Linear, nn.Conv2d}
# Batch norms whose evaluation is plain batch norm's with their running statistics (renorm's r and d and
# ghost batch norm's chunks exist only in training).
FOLD_NORMS: set[type] = {nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchRenorm1d, nn.BatchRenorm2d, nn.GhostBatchNorm1d,
                         nn.GhostBatchNorm2d}
FOLD_PAIRS: dict[type, Callable[[nn.Module], list[tuple[str, str]]]] = {}


def register_fold_pairs(container_type: type, pairs: Callable[[nn.Module], list[tuple[str, str]]]) -> None:
    """`pairs(container)` lists the (affine child, batch norm child) names where the norm directly follows
    the affine layer in the container's forward pass."""
    FOLD_PAIRS[container_type] = pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` with every evaluation-mode batch norm folded into the Linear or Conv2d (or other
    registered affine layer) right before it, inside residual blocks too, the batch norm replaced by an
    Identity. The original is untouched.

    Left as they are: batch norms in training mode (their statistics still change), those with
    track_running_stats=False (they use batch statistics in evaluation too), and those with no
    registered affine layer right before them. The folded weights are computed in float64 and stored in
    the layer's dtype.

    Inputs:
    - model: a normlab Module.
    Returns the folded copy, which predicts what `model` predicts in evaluation mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a normlab.nn.Module, got {type(model).__name__}")
    folded = copy.deepcopy(model)
    for container in list(folded.modules()):
        for affine_name, norm_name in FOLD_PAIRS.get(type(container), lambda _: [])(container):
            affine, norm = container._modules[affine_name], container._modules[norm_name]
            if _foldable(affine, norm):
                _fold_into(affine, norm)
                setattr(container, norm_name, nn.Identity())
    return folded


def _sequential_pairs(container: nn.Module) -> list[tuple[str, str]]:
    return list(itertools.pairwise(container._modules))


def _foldable(affine: nn.Module, norm: nn.Module) -> bool:
    return (type(affine) in FOLD_TARGETS and type(norm) in FOLD_NORMS
            and not norm.training and norm.track_running_stats
            and affine.weight.shape[0] == norm.num_features)


def _fold_into(affine: nn.Module, norm: nn.Module) -> None:
    def f64(a):
        return np.asarray(a, np.float64)

    c, dtype = norm.num_features, affine.weight.data.dtype
    gamma, beta = norm._gamma_beta()  # (C,): fixed ones and zeros without affine parameters
    scale, shift = batchnorm_inference_affine(f64(gamma), f64(beta), f64(norm.running_mean),
                                              f64(norm.running_var), norm.eps)  # (C,) each
    w = f64(affine.weight.data)  # (C, ...)
    bias = f64(affine.bias.data) if affine.bias is not None else np.zeros(c)  # (C,)
    affine.weight = nn.Parameter((w * scale.reshape((c,) + (1,) * (w.ndim - 1))).astype(dtype))
    affine.bias = nn.Parameter((bias * scale + shift).astype(dtype))


register_fold_pairs(nn.ResidualBlock, lambda block: [("conv1", "bn1"), ("conv2", "bn2")])
# The named Sequentials are what normlab train builds, so what `normlab export --fold` folds.
for _model_type in (nn.Sequential, *NAMED_SEQUENTIALS):
    register_fold_pairs(_model_type, _sequential_pairs)
