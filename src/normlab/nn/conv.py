"""2-D convolution as a module."""

from __future__ import annotations

import numpy as np

from normlab.checks import check_positive_int
from normlab.functional import conv2d_backward, conv2d_forward
from normlab.functional._windows import as_pair
from normlab.nn.linear import _WeightLayer


class Conv2d(_WeightLayer):
    """2-D convolution over (N, C, H, W) inputs, with torch.nn.Conv2d's attributes and state dict.

    - weight: (out_channels, in_channels // groups, kh, kw); bias: (out_channels,) or None.
    - kernel_size, stride, padding: stored as pairs, as torch stores them.
    - groups: in_channels and out_channels are split into `groups` independent convolutions.

    Initialized as torch.nn.Conv2d (see `_WeightLayer`), with fan_in = in_channels // groups * kh * kw
    (torch's kaiming_uniform_ with a = sqrt(5)). The models in `normlab.models` re-initialize their
    convolutions with He's normal initialization.
    """

    _backward_fn = staticmethod(conv2d_backward)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 groups: int = 1, *, rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        self.in_channels = in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = out_channels = check_positive_int("out_channels", out_channels)
        self.groups = groups = check_positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.kernel_size = as_pair("kernel_size", kernel_size, minimum=1)
        self.stride = as_pair("stride", stride, minimum=1)
        self.padding = as_pair("padding", padding, minimum=0)
        self._init_parameters((out_channels, in_channels // groups, *self.kernel_size), bias, rng, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if isinstance(x, np.ndarray) and x.ndim == 4 and x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}) expected input with {self.in_channels} "
                             f"channels in dimension 1, got input of shape {x.shape}")
        out, self._cache = conv2d_forward(x, self.weight.data, self._bias_data, self.stride, self.padding, self.groups)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}")
