"""Elementwise nonlinearities. Each backward is the local derivative times the upstream gradient, written
in terms of what the forward already computed."""

from __future__ import annotations

import numpy as np

from normlab import memory
from normlab.functional._checks import check_float_array, check_same_shape


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """out = max(x, 0) (NaN stays NaN). Returns (out, cache) with cache the mask x > 0.

    Two vectorized passes into recycled memory (`normlab.memory`); `x * (x > 0)` instead multiplies by a
    bool array, which NumPy casts element by element, several times slower inside a training step
    (docs/performance.md)."""
    x = check_float_array("x", x)
    mask = np.greater(x, 0)
    return np.maximum(x, 0, out=memory.empty_like(x)), mask


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """d max(x, 0)/dx = 1 where x > 0, else 0 (0 at x = 0, as PyTorch)."""
    dout = check_same_shape("dout", dout, mask.shape)
    return np.multiply(dout, mask, out=memory.empty(dout.shape, dout.dtype), dtype=dout.dtype)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """out = 1 / (1 + exp(-x)), computed without overflow for large |x|. Returns (out, out)."""
    x = check_float_array("x", x)
    # exp of a non-positive number never overflows: use exp(-|x|) on both sides.
    z = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype, copy=False)
    return out, out


def sigmoid_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d sigmoid/dx = s * (1 - s)."""
    return check_same_shape("dout", dout, out.shape) * out * (1 - out)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """out = tanh(x). Returns (out, out)."""
    out = np.tanh(check_float_array("x", x))
    return out, out


def tanh_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d tanh/dx = 1 - tanh^2."""
    return check_same_shape("dout", dout, out.shape) * (1 - out * out)
