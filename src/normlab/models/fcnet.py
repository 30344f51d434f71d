"""CS231n's FullyConnectedNet: {affine - [normalization] - relu - [dropout]} x (L - 1) - affine - softmax
(the nonlinearity can also be a sigmoid or tanh, as in the batch norm paper's MNIST network)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from normlab.models.registry import register_model
from normlab.models.regularization import l2_penalty, l2_penalty_backward
from normlab.nn import (
    BatchNorm1d,
    BatchRenorm1d,
    Dropout,
    Flatten,
    GhostBatchNorm1d,
    GroupNorm,
    LayerNorm,
    Linear,
    Module,
    ReLU,
    RenormSchedule,
    Sequential,
    Sigmoid,
    Tanh,
)

NORMALIZATIONS = ("none", "batch", "layer", "group", "renorm", "ghost")
ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


class FullyConnectedNet(Sequential):
    """A fully connected network for classification; it returns class scores (logits).

    Layers, in order (their indices are the state dict prefixes, as in the equivalent torch.nn.Sequential):
    Flatten, then per hidden size d: Linear(., d), the normalization (BatchNorm1d(d), LayerNorm(d),
    GroupNorm(groups, d), BatchRenorm1d(d) or GhostBatchNorm1d(d, virtual_batch_size)), the activation
    (ReLU by default), Dropout(p) when dropout > 0; then Linear(., num_classes).

    Inputs:
    - input_dim: features per example after flattening (784 for 1x28x28 images).
    - hidden_dims: the hidden layer sizes; () is a linear classifier.
    - num_classes: the number of scores per example.
    - normalization: "none", "batch", "layer", "group", "renorm" (batch renormalization) or "ghost"
      (ghost batch norm).
    - activation: "relu", "sigmoid" or "tanh".
    - dropout: probability of dropping a hidden activation (PyTorch's p), 0 for none.
    - weight_scale: "he" draws each weight matrix from N(0, 2 / fan_in) (He et al., 2015); a number
      draws every weight from N(0, weight_scale^2) as CS231n's weight_scale. Biases start at 0, gamma at
      1 and beta at 0.
    - reg: L2 strength: `regularization_loss()` = 0.5 * reg * sum ||W||^2 over the Linear weights only
      (gamma, beta and biases are not regularized).
    - num_groups: groups of group normalization; None uses gcd(32, d) for a layer of size d.
    - renorm_schedule: the rmax/dmax schedule of batch renormalization (None: Ioffe's, which relaxes
      over 40000 steps; pass a shorter one for short runs).
    - virtual_batch_size: samples per virtual batch of ghost batch norm (a batch of at most this many
      samples is normalized as plain batch norm would).
    - rng: draws the weights, and seeds each Dropout's own generator.
    - dtype: float32 (training) or float64 (gradient checks).
    """

    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (512, 256), num_classes: int = 10, *,
                 normalization: str = "none", dropout: float = 0.0, weight_scale: float | str = "he",
                 reg: float = 0.0, num_groups: int | None = None, activation: str = "relu",
                 renorm_schedule: RenormSchedule | None = None, virtual_batch_size: int = 16,
                 rng: np.random.Generator, dtype=np.float32):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if weight_scale != "he" and not (isinstance(weight_scale, (int, float)) and weight_scale > 0):
            raise ValueError(f"weight_scale must be 'he' or a positive number, got {weight_scale!r}")
        if not reg >= 0:
            raise ValueError(f"reg must be >= 0, got {reg!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        hidden_dims = tuple(int(d) for d in hidden_dims)
        layers: list[Module] = [Flatten()]
        sizes = (int(input_dim), *hidden_dims)
        for fan_in, d in itertools.pairwise(sizes):
            layers.append(self._linear(fan_in, d, weight_scale, rng, dtype))
            if normalization == "batch":
                layers.append(BatchNorm1d(d, dtype=dtype))
            elif normalization == "layer":
                layers.append(LayerNorm(d, dtype=dtype))
            elif normalization == "group":
                groups = math.gcd(32, d) if num_groups is None else num_groups
                if d % groups:
                    raise ValueError(f"num_groups must divide every hidden size, got num_groups={groups} for a "
                                     f"layer of size {d}")
                layers.append(GroupNorm(groups, d, dtype=dtype))
            elif normalization == "renorm":
                layers.append(BatchRenorm1d(d, schedule=renorm_schedule, dtype=dtype))
            elif normalization == "ghost":
                layers.append(GhostBatchNorm1d(d, virtual_batch_size, dtype=dtype))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
        layers.append(self._linear(sizes[-1], num_classes, weight_scale, rng, dtype))
        super().__init__(*layers)
        self.hidden_dims, self.num_classes, self.normalization = hidden_dims, num_classes, normalization
        self.dropout, self.weight_scale, self.reg, self.activation = dropout, weight_scale, reg, activation

    @staticmethod
    def _linear(fan_in: int, fan_out: int, weight_scale, rng: np.random.Generator, dtype) -> Linear:
        # Linear draws PyTorch's uniform initialization; a throwaway generator feeds it, since it is replaced.
        layer = Linear(fan_in, fan_out, rng=np.random.default_rng(0), dtype=dtype)
        std = math.sqrt(2.0 / fan_in) if weight_scale == "he" else float(weight_scale)
        layer.weight.data[...] = rng.standard_normal((fan_out, fan_in)) * std
        layer.bias.data[...] = 0
        return layer

    def regularization_loss(self) -> float:
        """0.5 * reg * sum of squared Linear weights."""
        return l2_penalty(self, self.reg)

    def regularization_backward(self) -> None:
        """Add reg * W into every Linear weight's .grad."""
        l2_penalty_backward(self, self.reg)


@register_model("fcnet")
def build_fcnet(*, input_shape: tuple[int, ...], num_classes: int, rng: np.random.Generator,
                hidden_dims: Sequence[int] = (512, 256), normalization: str = "batch", dropout: float = 0.0,
                weight_scale: float | str = "he", reg: float = 0.0, num_groups: int | None = None,
                activation: str = "relu", renorm_schedule: RenormSchedule | None = None,
                virtual_batch_size: int = 16, dtype=np.float32) -> FullyConnectedNet:
    """FullyConnectedNet over flattened inputs; batch-normalized by default."""
    return FullyConnectedNet(int(np.prod(input_shape)), hidden_dims, num_classes, normalization=normalization,
                             dropout=dropout, weight_scale=weight_scale, reg=reg, num_groups=num_groups,
                             activation=activation, renorm_schedule=renorm_schedule,
                             virtual_batch_size=virtual_batch_size, rng=rng, dtype=dtype)
