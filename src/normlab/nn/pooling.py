"""Pooling modules."""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.functional._windows import as_pair
from normlab.nn.module import Module


class _Pool2d(Module):
    _forward = staticmethod(F.max_pool2d_forward)
    _backward = staticmethod(F.max_pool2d_backward)

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        as_pair("kernel_size", kernel_size, minimum=1)
        if stride is not None:
            as_pair("stride", stride, minimum=1)
        # Stored as given, stride defaulting to kernel_size, as torch stores them.
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = self._forward(x, self.kernel_size, self.stride)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self._backward(dout, self._cache_or_raise(self._cache))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """Maximum over each kernel_size window, stepping by stride (default: kernel_size), no padding."""


class AvgPool2d(_Pool2d):
    """Mean over each kernel_size window, stepping by stride (default: kernel_size), no padding."""

    _forward = staticmethod(F.avg_pool2d_forward)
    _backward = staticmethod(F.avg_pool2d_backward)


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C): the mean of each channel. torch's twin is
    Sequential(AdaptiveAvgPool2d(1), Flatten())."""

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = F.global_avg_pool2d_forward(x)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return F.global_avg_pool2d_backward(dout, self._cache_or_raise(self._cache))
