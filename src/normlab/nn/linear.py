"""Fully connected layer."""

from __future__ import annotations

import numpy as np

from normlab.checks import check_positive_int, resolve_rng
from normlab.functional import linear_backward, linear_forward
from normlab.nn.module import Module, Parameter


class Linear(Module):
    """out = x @ weight.T + bias, weight (out_features, in_features) as in PyTorch.

    Initialized as torch.nn.Linear: weight and bias uniform in [-1/sqrt(in), 1/sqrt(in)].
    `rng` draws the initial values (a fresh unseeded generator if None).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        self.in_features = in_features = check_positive_int("in_features", in_features)
        self.out_features = out_features = check_positive_int("out_features", out_features)
        rng = resolve_rng(rng)
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, out_features).astype(dtype)) if bias else None
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        dx, dweight, dbias = linear_backward(dout, self._cache_or_raise(self._cache), input_grad=self.needs_input_grad)
        self.weight.accumulate_grad(dweight)
        if self.bias is not None:
            self.bias.accumulate_grad(dbias)
        return dx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
