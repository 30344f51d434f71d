"""Pooling modules."""

from __future__ import annotations

from normlab import functional as F
from normlab.functional._windows import as_pair
from normlab.nn.module import _FunctionalLayer


class _Pool2d(_FunctionalLayer):
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

    def _arguments(self) -> tuple:
        return self.kernel_size, self.stride

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """Maximum over each kernel_size window, stepping by stride (default: kernel_size), no padding."""


class AvgPool2d(_Pool2d):
    """Mean over each kernel_size window, stepping by stride (default: kernel_size), no padding."""

    _forward = staticmethod(F.avg_pool2d_forward)
    _backward = staticmethod(F.avg_pool2d_backward)


class GlobalAvgPool2d(_FunctionalLayer):
    """(N, C, H, W) -> (N, C): the mean of each channel. torch's twin is
    Sequential(AdaptiveAvgPool2d(1), Flatten())."""

    _forward = staticmethod(F.global_avg_pool2d_forward)
    _backward = staticmethod(F.global_avg_pool2d_backward)
