"""Fully connected layer."""

from __future__ import annotations

import math

import numpy as np

from normlab.checks import check_positive_int, resolve_rng
from normlab.functional import linear_backward, linear_forward
from normlab.nn.module import Module, Parameter


class _WeightLayer(Module):
    """A layer with a `weight` (out, *fan_in) and an optional `bias` (out,), both initialized as torch
    initializes Linear and Conv2d: uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in the weight's values per
    output. `rng` draws them (a fresh unseeded generator if None). The backward runs `_backward_fn(dout,
    cache, input_grad=...) -> (dx, dweight, dbias)` on the forward's `_cache`."""

    _backward_fn = None  # staticmethod(F.<layer>_backward) in each subclass

    def _init_parameters(self, shape: tuple[int, ...], bias: bool, rng: np.random.Generator | None, dtype) -> None:
        rng = resolve_rng(rng)
        bound = 1.0 / np.sqrt(math.prod(shape[1:]))
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, shape[0]).astype(dtype)) if bias else None
        self._cache = None

    @property
    def _bias_data(self) -> np.ndarray | None:
        return None if self.bias is None else self.bias.data

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        cache = self._cache_or_raise(self._cache)
        dx, dweight, dbias = self._backward_fn(dout, cache, input_grad=self.needs_input_grad)
        self.weight.accumulate_grad(dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(dbias)
        return dx


class Linear(_WeightLayer):
    """out = x @ weight.T + bias, weight (out_features, in_features) as in PyTorch, initialized as
    torch.nn.Linear (see `_WeightLayer`)."""

    _backward_fn = staticmethod(linear_backward)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self._init_parameters((self.out_features, self.in_features), bias, rng, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = linear_forward(x, self.weight.data, self._bias_data)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
