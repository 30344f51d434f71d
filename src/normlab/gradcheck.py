"""Numerical gradients by centered differences, and the relative error used to compare them with an
analytic backward pass. Use float64: in float32 the differences drown in rounding error.

Checking your own layer::

    out, cache = my_forward(x, w)
    dout = rng.standard_normal(out.shape)
    dx, dw = my_backward(dout, cache)
    dx_num = numerical_gradient(lambda x: my_forward(x, w)[0], x, dout)
    assert relative_error(dx, dx_num) < 1e-7
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[np.ndarray], np.ndarray | float], x: np.ndarray, dout: np.ndarray | None = None,
                       h: float = 1e-5) -> np.ndarray:
    """Gradient of sum(f(x) * dout) with respect to x, by centered differences.

    Inputs:
    - f: a function of x returning an array (then `dout` weights its elements) or a scalar (then `dout`
      must be None).
    - x: float64 array; perturbed in place one element at a time and restored exactly.
    - dout: upstream gradient with f(x)'s shape, or None for a scalar f.
    - h: step. The error is O(h^2) from truncation plus O(eps / h) from rounding; 1e-5 balances them in
      float64.

    Returns an array of x's shape: (L(x + h e_i) - L(x - h e_i)) / (2h) for every element i.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating-point numpy.ndarray, got {getattr(x, 'dtype', type(x).__name__)}")

    def loss() -> float:
        y = f(x)
        if dout is None:
            if np.ndim(y) != 0:
                raise ValueError(f"f returned shape {np.shape(y)}; pass dout for a function with array output")
            return float(y)
        if np.shape(y) != dout.shape:
            raise ValueError(f"dout must have f(x)'s shape {np.shape(y)}, got {dout.shape}")
        return float(np.sum(y * dout))

    grad = np.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat_x, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + h
        plus = loss()
        flat_x[i] = original - h
        minus = loss()
        flat_x[i] = original
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


def _same_shape_float64(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Norm-wise relative error ||a - b|| / max(||a|| + ||b||, tiny), a number in [0, 1].

    Norm-wise rather than elementwise: an element that is nearly zero in both does not dominate. Around
    1e-7 or below means the two agree (in float64); 1e-2 or above usually means a bug.
    """
    a, b = _same_shape_float64(a, b)
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / max(scale, np.finfo(np.float64).tiny))


def max_elementwise_relative_error(a: np.ndarray, b: np.ndarray, floor: float = 1e-8) -> float:
    """CS231n's measure: max over elements of |a - b| / max(floor, |a| + |b|)."""
    a, b = _same_shape_float64(a, b)
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b)), initial=0.0))


def check_layer(forward: Callable[..., tuple[np.ndarray, object]],
                backward: Callable[[np.ndarray, object], tuple[np.ndarray, ...] | np.ndarray],
                inputs: dict[str, np.ndarray], *, rng: np.random.Generator, h: float = 1e-5) -> dict[str, float]:
    """Compare a layer's backward with numerical gradients for every input.

    Inputs:
    - forward: called as forward(**inputs), returns (out, cache).
    - backward: called as backward(dout, cache), returns the gradients in the order of `inputs`.
    - inputs: the arrays to differentiate with respect to, by argument name (float64).
    - rng: draws the upstream gradient.

    Returns {name: relative error} for every input.
    """
    out, cache = forward(**inputs)
    dout = rng.standard_normal(np.shape(out))
    grads = backward(dout, cache)
    if isinstance(grads, np.ndarray):
        grads = (grads,)
    if len(grads) < len(inputs):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(inputs)} inputs")
    errors = {}
    for (name, value), analytic in zip(inputs.items(), grads):

        def f(v, name=name):
            return forward(**{**inputs, name: v})[0]

        errors[name] = relative_error(analytic, numerical_gradient(f, value, dout, h))
    return errors
