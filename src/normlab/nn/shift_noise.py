"""Time-varying noise that shifts and rescales activations: the "noisy batch norm" of Santurkar et al. (2018),
"How does batch normalization help optimization?", section 2.1. Placed after a batch norm layer, it undoes
the stability of the distribution that batch norm gives its outputs, so that one can ask whether that
stability (less "internal covariate shift") is what makes batch norm train fast."""

from __future__ import annotations

import numpy as np

from normlab.checks import resolve_rng
from normlab.functional._checks import check_float_array, check_same_shape
from normlab.nn.module import Module


class DistributionShiftNoise(Module):
    """y = a * x + b, with a random scale a and offset b whose distribution changes at every step.

    In training, every forward call (one per training step) first draws the step's distribution, per
    feature j (axis 1: the features of (N, D), the channels of (N, C, H, W)):

        alpha_j ~ Uniform(1 - scale_spread, 1 + scale_spread)     the step's mean scale of feature j
        mu_j    ~ Uniform(-shift_spread, shift_spread)            the step's mean offset of feature j

    and then an independent scale and offset for every element (each example, each position):

        a = alpha_j + sample_std * e,   b = mu_j + sample_std * d,   e, d ~ N(0, 1)

    So within a step feature j of a batch-normalized input leaves with mean about mu_j and standard
    deviation about alpha_j (non-zero mean, non-unit variance), and both move from step to step. Over many
    steps E[a] = 1 and E[b] = 0, with Var[a] = scale_spread^2 / 3 + sample_std^2 and
    Var[b] = shift_spread^2 / 3 + sample_std^2 (the variance of Uniform(-s, s) is s^2 / 3). Since the noise
    is the identity on average, evaluation mode applies none (as inverted dropout does).

    Inputs:
    - scale_spread: in [0, 1); the step's mean scale is drawn within 1 ± scale_spread.
    - shift_spread: >= 0; the step's mean offset is drawn within ± shift_spread.
    - sample_std: >= 0; the standard deviation of each element's own scale and offset around the step's.
    - rng: draws everything (a fresh unseeded generator if None); its state is part of a training run's
      state, as Dropout's is.
    """

    def __init__(self, scale_spread: float = 0.75, shift_spread: float = 1.0, sample_std: float = 0.1, *,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= scale_spread < 1.0:
            raise ValueError(f"scale_spread must be in [0, 1) (a scale stays positive), got {scale_spread!r}")
        if not shift_spread >= 0.0:
            raise ValueError(f"shift_spread must be >= 0, got {shift_spread!r}")
        if not sample_std >= 0.0:
            raise ValueError(f"sample_std must be >= 0, got {sample_std!r}")
        self.scale_spread, self.shift_spread, self.sample_std = float(scale_spread), float(shift_spread), float(sample_std)
        self.rng = resolve_rng(rng)
        self._scale: np.ndarray | None = None  # the last training forward's a (what backward multiplies by)
        self._identity = False  # the last forward was in evaluation mode

    def draw(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """One step's scale a and offset b for an input of `shape` (N, F, ...), both of that shape, float64."""
        if len(shape) < 2:
            raise ValueError(f"x must have a batch axis and a feature axis (N, F, ...), got shape {shape}")
        per_feature = (1, shape[1]) + (1,) * (len(shape) - 2)  # broadcasts over the batch and positions
        alpha = self.rng.uniform(1.0 - self.scale_spread, 1.0 + self.scale_spread, size=per_feature)
        mu = self.rng.uniform(-self.shift_spread, self.shift_spread, size=per_feature)
        a = alpha + self.sample_std * self.rng.standard_normal(shape)
        b = mu + self.sample_std * self.rng.standard_normal(shape)
        return a, b

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_array("x", x)
        self._identity = not self.training
        if self._identity:
            self._scale = None
            return x
        a, b = self.draw(x.shape)
        self._scale = a.astype(x.dtype)
        return (x * self._scale + b.astype(x.dtype)).astype(x.dtype, copy=False)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._identity:
            return dout
        scale = self._cache_or_raise(self._scale)
        return check_same_shape("dout", dout, scale.shape) * scale

    def extra_repr(self) -> str:
        return f"scale_spread={self.scale_spread}, shift_spread={self.shift_spread}, sample_std={self.sample_std}"
