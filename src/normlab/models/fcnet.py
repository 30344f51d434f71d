"""CS231n's FullyConnectedNet: {affine - [normalization] - relu - [dropout]} x (L - 1) - affine - softmax
(the nonlinearity can also be a sigmoid or tanh, as in the batch norm paper's MNIST network, and the
normalization can come after it instead of before)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from normlab.checks import resolve_rng
from normlab.models.cnn import he_normal_init
from normlab.models.registry import register_model
from normlab.models.regularization import l2_penalty, l2_penalty_backward
from normlab.nn import Dropout, Flatten, Linear, Module, ReLU, RenormSchedule, Sequential, Sigmoid, Tanh
from normlab.nn.norm_registry import DEFAULT_PLACEMENT, build_norm, check_norm_options, check_placement

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
DEFAULT_NORMALIZATION = "batch"  # the class's and its registered builder's


def _flat_size(input_shape) -> int:
    """Features per example: input_shape is an int, or one sample's shape (e.g. (1, 28, 28)), flattened."""
    dims = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
    if not dims or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in dims):
        raise ValueError(f"input_shape must be a positive integer or one sample's shape of positive integers, "
                         f"got {input_shape!r}")
    return int(np.prod(dims))


@register_model("fcnet")
class FullyConnectedNet(Sequential):
    """A fully connected network for classification; it returns class scores (logits).

    Layers, in order (their indices are the state dict prefixes, as in the equivalent torch.nn.Sequential):
    Flatten, then per hidden size d: Linear(., d), the normalization `normlab.nn.build_norm(normalization, d)` and
    the activation in the order `placement` says, Dropout(p) when dropout > 0; then Linear(., num_classes).

    Inputs:
    - input_shape: one example's shape, (1, 28, 28) for Fashion-MNIST, or the number of features after
      flattening (784), as the convolutional models' input_shape. (`input_dim=` is its old, deprecated name.)
    - hidden_dims: the hidden layer sizes; () is a linear classifier.
    - num_classes: the number of scores per example.
    - normalization: a name of `normlab.nn.normalization_names()` but "instance" (feature vectors have no H x W).
    - norm_options: the normalization's options (see `normlab.nn.get_normalization(name).options`), e.g.
      {"groups": 16}, {"virtual_batch_size": 32}, {"rmax": 2.0, "dmax": 1.0, "warmup_steps": 0}.
    - placement: "before" the nonlinearity (Linear - norm - activation, the batch norm paper's) or "after" it
      (Linear - activation - norm).
    - activation: "relu", "sigmoid" or "tanh".
    - dropout: probability of dropping a hidden activation (PyTorch's p), 0 for none.
    - weight_scale: "he" draws each weight matrix from N(0, 2 / fan_in) (He et al., 2015); a number
      draws every weight from N(0, weight_scale^2) as CS231n's weight_scale. Biases start at 0, gamma at
      1 and beta at 0.
    - reg: L2 strength: `regularization_loss()` = 0.5 * reg * sum ||W||^2 over the Linear weights only
      (gamma, beta and biases are not regularized).
    - num_groups, renorm_schedule, virtual_batch_size: shorthands for norm_options' groups, schedule and
      virtual_batch_size (None: the registry's default).
    - rng: draws the weights, and seeds each Dropout's own generator (a fresh unseeded generator if None).
    - dtype: float32 (training) or float64 (gradient checks).
    """

    normalizes = "features"  # for normlab train (models/registry.py): every normalization but instance norm

    def __init__(self, input_shape=None, hidden_dims: Sequence[int] = (512, 256), num_classes: int = 10, *,
                 normalization: str = DEFAULT_NORMALIZATION, norm_options: Mapping[str, Any] | None = None,
                 placement: str = DEFAULT_PLACEMENT, dropout: float = 0.0, weight_scale: float | str = "he",
                 reg: float = 0.0, num_groups: int | None = None, activation: str = "relu",
                 renorm_schedule: RenormSchedule | None = None, virtual_batch_size: int | None = None,
                 rng: np.random.Generator | None = None, dtype=np.float32, input_dim=None):
        if input_dim is not None:
            warnings.warn("FullyConnectedNet(input_dim=...) is deprecated: use input_shape=, which takes the "
                          "number of features or one example's shape", DeprecationWarning, stacklevel=2)
            if input_shape is not None:
                raise TypeError("give input_shape or its old name input_dim, not both")
            input_shape = input_dim
        if input_shape is None:
            raise TypeError("FullyConnectedNet needs input_shape (features per example, or one example's shape)")
        options = dict(norm_options or {})
        # The older keyword shorthands, each for its own normalization (ignored by the others, as before).
        for owner, key, value in (("group", "groups", num_groups), ("renorm", "schedule", renorm_schedule),
                                  ("ghost", "virtual_batch_size", virtual_batch_size)):
            if value is not None and normalization == owner:
                options.setdefault(key, value)
        check_norm_options(normalization, options, spatial=False)
        check_placement(placement)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if weight_scale != "he" and not (isinstance(weight_scale, (int, float)) and weight_scale > 0):
            raise ValueError(f"weight_scale must be 'he' or a positive number, got {weight_scale!r}")
        if not reg >= 0:
            raise ValueError(f"reg must be >= 0, got {reg!r}")
        rng = resolve_rng(rng)
        hidden_dims = tuple(int(d) for d in hidden_dims)
        layers: list[Module] = [Flatten()]
        throwaway = np.random.default_rng(0)  # for Linear's own initialization, which he_normal_init replaces
        sizes = (_flat_size(input_shape), *hidden_dims)
        for fan_in, d in itertools.pairwise(sizes):
            layers.append(Linear(fan_in, d, rng=throwaway, dtype=dtype))
            block = [build_norm(normalization, d, dtype=dtype, **options), ACTIVATIONS[activation]()]
            if normalization == "none":
                block = block[1:]
            layers += block if placement == "before" else block[::-1]
            if dropout > 0:
                layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
        layers.append(Linear(sizes[-1], num_classes, rng=throwaway, dtype=dtype))
        super().__init__(*layers)
        he_normal_init(self, rng, None if weight_scale == "he" else weight_scale)
        self.hidden_dims, self.num_classes, self.normalization = hidden_dims, num_classes, normalization
        self.norm_options, self.placement = options, placement
        self.dropout, self.weight_scale, self.reg, self.activation = dropout, weight_scale, reg, activation

    def regularization_loss(self) -> float:
        """0.5 * reg * sum of squared Linear weights."""
        return l2_penalty(self, self.reg)

    def regularization_backward(self) -> None:
        """Add reg * W into every Linear weight's .grad."""
        l2_penalty_backward(self, self.reg)
