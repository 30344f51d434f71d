"""Inverted dropout: in training each activation is zeroed with probability p and the survivors are scaled
by 1 / (1 - p), so evaluation is the identity. p is the probability of dropping, as in PyTorch (CS231n's
p is the probability of keeping)."""

from __future__ import annotations

import numpy as np

from normlab.functional._checks import check_float_array, check_probability, check_same_shape


def dropout_forward(
    x: np.ndarray, p: float, rng: np.random.Generator | None, *, training: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs:
    - x: float array of any shape.
    - p: probability of dropping an activation, in [0, 1).
    - rng: the numpy.random.Generator that draws the mask (required in training with p > 0).
    - training: in evaluation (or with p = 0) the layer is the identity.

    Returns (out, mask): mask holds 0 or 1 / (1 - p) per element, or None when nothing was dropped.
    """
    x = check_float_array("x", x)
    check_probability("p", p)
    if p == 1.0:
        raise ValueError("p must be < 1 (p = 1 would drop every activation), got 1.0")
    if not training or p == 0.0:
        return x, None
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator in training, got {type(rng).__name__}")
    keep = rng.random(x.shape, dtype=np.float64) >= p
    mask = keep.astype(x.dtype) / x.dtype.type(1.0 - p)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The same mask scales the gradient; the identity when nothing was dropped."""
    if mask is None:
        return dout
    return check_same_shape("dout", dout, mask.shape) * mask
