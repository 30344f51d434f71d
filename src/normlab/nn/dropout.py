"""Inverted dropout as a module."""

from __future__ import annotations

import numpy as np

from normlab.checks import check_probability, resolve_rng
from normlab.functional import dropout_backward, dropout_forward
from normlab.nn.module import Module


class Dropout(Module):
    """Zeroes each activation with probability p in training, scaling survivors by 1 / (1 - p); the
    identity in evaluation. `rng` draws the masks (a fresh unseeded generator if None); its state is part
    of a training run's state, so trainers save and restore `module.rng`."""

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None):
        super().__init__()
        check_probability("p", p)
        if p == 1.0:
            raise ValueError("p must be < 1 (p = 1 would drop every activation), got 1.0")
        self.p = float(p)
        self.rng = resolve_rng(rng)
        self._mask = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._mask = dropout_forward(x, self.p, self.rng, training=self.training)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dropout_backward(dout, self._mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"
