"""The basic residual block of ResNet (He et al., 2016), with a choice of normalization."""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.checks import resolve_rng
from normlab.nn.container import Sequential
from normlab.nn.conv import Conv2d
from normlab.nn.module import Module
from normlab.nn.norm_registry import build_norm


class ResidualBlock(Module):
    """Two 3x3 convolutions with a skip connection:

        out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))

    Children, in this order (so the state dict reads conv1.weight, bn1.weight, bn1.running_mean, ...,
    shortcut.0.weight, shortcut.1.weight, ...):
    - conv1: Conv2d(in_channels, out_channels, 3, stride, padding=1), bias only when normalization="none"
      (a bias before a normalization is cancelled by its mean subtraction);
    - bn1: `build_norm(normalization, out_channels, spatial=True, **norm_options)` (`normlab.nn.norm_registry`);
      the name stays bn1 whatever the kind, so state dicts of every variant line up;
    - conv2: Conv2d(out_channels, out_channels, 3, 1, padding=1); bn2 likewise;
    - shortcut: Sequential(Conv2d(in_channels, out_channels, 1, stride), norm) when the block changes the
      shape (stride != 1 or in_channels != out_channels); otherwise None and the skip is the identity.

    Input (N, in_channels, H, W) -> output (N, out_channels, (H - 1) // stride + 1, (W - 1) // stride + 1).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, normalization: str = "batch", *,
                 norm_options: dict | None = None, rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = resolve_rng(rng)
        bias = normalization == "none"

        def norm() -> Module:
            return build_norm(normalization, out_channels, spatial=True, dtype=dtype, **(norm_options or {}))

        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias, rng=rng, dtype=dtype)
        self.bn1 = norm()
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=bias, rng=rng, dtype=dtype)
        self.bn2 = norm()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = Sequential(
                Conv2d(in_channels, out_channels, 1, stride, 0, bias=bias, rng=rng, dtype=dtype),
                norm(),
            )
        else:
            self.shortcut = None
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.normalization = normalization
        self._masks = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        hidden, mask1 = F.relu_forward(self.bn1(self.conv1(x)))  # (N, out, H', W')
        total = self.bn2(self.conv2(hidden))  # a fresh array no module keeps (bn2 may be Identity: conv2's output)
        total += x if self.shortcut is None else self.shortcut(x)
        out, mask2 = F.relu_forward(total)
        self._masks = (mask1, mask2)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mask1, mask2 = self._cache_or_raise(self._masks)
        d_sum = F.relu_backward(dout, mask2)  # flows into both branches unchanged
        d_hidden = F.relu_backward(self.conv2.backward(self.bn2.backward(d_sum)), mask1)
        dx = self.conv1.backward(self.bn1.backward(d_hidden))
        dx += d_sum if self.shortcut is None else self.shortcut.backward(d_sum)
        return dx

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, normalization={self.normalization!r}"
