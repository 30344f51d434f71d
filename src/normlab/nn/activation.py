"""Elementwise nonlinearities as modules."""

from __future__ import annotations

from normlab import functional as F
from normlab.nn.module import _FunctionalLayer


class ReLU(_FunctionalLayer):
    """max(x, 0)."""

    _forward = staticmethod(F.relu_forward)
    _backward = staticmethod(F.relu_backward)


class Sigmoid(_FunctionalLayer):
    """1 / (1 + exp(-x))."""

    _forward = staticmethod(F.sigmoid_forward)
    _backward = staticmethod(F.sigmoid_backward)


class Tanh(_FunctionalLayer):
    """tanh(x)."""

    _forward = staticmethod(F.tanh_forward)
    _backward = staticmethod(F.tanh_backward)
