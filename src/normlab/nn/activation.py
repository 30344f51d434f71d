"""Elementwise nonlinearities as modules."""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.nn.module import Module


class _Elementwise(Module):
    _forward = staticmethod(F.relu_forward)
    _backward = staticmethod(F.relu_backward)

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = self._forward(x)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self._backward(dout, self._cache_or_raise(self._cache))


class ReLU(_Elementwise):
    """max(x, 0)."""


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""

    _forward = staticmethod(F.sigmoid_forward)
    _backward = staticmethod(F.sigmoid_backward)


class Tanh(_Elementwise):
    """tanh(x)."""

    _forward = staticmethod(F.tanh_forward)
    _backward = staticmethod(F.tanh_backward)
