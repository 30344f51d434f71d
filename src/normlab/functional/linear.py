"""The affine (fully connected) layer, in PyTorch's layout: weight (M, D), out = x @ weight.T + bias.
CS231n's affine_forward(x, w, b) is linear_forward(x, w.T, b)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.functional._checks import check_cache, check_float_array, check_param, check_same_shape


@dataclass(frozen=True)
class LinearCache:
    x2d: np.ndarray  # (N, D): the input, rows flattened
    weight: np.ndarray  # (M, D)
    input_shape: tuple[int, ...]  # (N, d_1, ..., d_k)


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, LinearCache]:
    """Inputs:
    - x: (N, d_1, ..., d_k); each row is flattened to D = d_1 * ... * d_k features.
    - weight: (M, D).
    - bias: (M,) or None.

    Returns (out, cache), out of shape (N, M).
    """
    x = check_float_array("x", x)
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension, got a 0-D array")
    x2d = x.reshape(x.shape[0], -1)  # (N, D)
    weight = check_float_array("weight", weight, ndims=(2,))
    if weight.shape[1] != x2d.shape[1]:
        raise ValueError(
            f"weight must have shape (M, {x2d.shape[1]}) for input of shape {x.shape}, got {weight.shape}"
        )
    out = x2d @ weight.T.astype(x.dtype, copy=False)  # (N, M)
    if bias is not None:
        out += check_param("bias", bias, (weight.shape[0],), x.dtype)
    return out, LinearCache(x2d, weight, x.shape)


def linear_backward(dout: np.ndarray, cache: LinearCache, *, input_grad: bool = True
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Returns (dx, dweight, dbias): dx like the input (None when input_grad is False: the input is data),
    dweight (M, D), dbias (M,)."""
    check_cache("linear_backward", cache, LinearCache, "linear_forward")
    dout = check_same_shape("dout", dout, (cache.x2d.shape[0], cache.weight.shape[0]))
    dx = None
    if input_grad:
        dx = (dout @ cache.weight.astype(dout.dtype, copy=False)).reshape(cache.input_shape)  # (N, D)
    dweight = dout.T @ cache.x2d  # (M, D)
    dbias = dout.sum(axis=0)  # (M,)
    return dx, dweight, dbias
