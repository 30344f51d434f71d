"""Convolutional networks: CS231n's three-layer ConvNet and a small batch-normalized ResNet sized to train
well on a couple of CPU cores.

Both are `Sequential`s of standard layers (and `ResidualBlock`s), so their state dicts read like the
equivalent torch.nn.Sequential's. Convolutions and linear layers start from He's normal initialization
(std sqrt(2 / fan_in), biases 0), which suits ReLU networks; the bare `Conv2d` and `Linear` modules keep
PyTorch's default initialization.
"""

from __future__ import annotations

import numpy as np

from normlab.checks import check_positive_int, resolve_rng
from normlab.models.registry import register_model
from normlab.nn import (
    Conv2d,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    ResidualBlock,
    Sequential,
    build_norm,
)


def he_normal_init(model: Module, rng: np.random.Generator | None = None, weight_scale: float | None = None) -> None:
    """Re-draw every Conv2d and Linear weight of `model` from N(0, std^2), std = sqrt(2 / fan_in) (He et al.,
    2015) or `weight_scale` if given (CS231n's fixed scale); zero their biases. Normalization layers keep
    gamma = 1, beta = 0. rng: a fresh unseeded generator if None."""
    rng = resolve_rng(rng)
    for module in model.modules():
        if isinstance(module, (Conv2d, Linear)):
            weight = module.weight.data
            fan_in = int(np.prod(weight.shape[1:]))
            std = np.sqrt(2.0 / fan_in) if weight_scale is None else weight_scale
            weight[...] = rng.standard_normal(weight.shape) * std
            if module.bias is not None:
                module.bias.data[...] = 0


def _image_shape(input_shape: tuple[int, ...], pool: str) -> tuple[int, int, int]:
    """One image's (C, H, W), large enough for `pool`, the 2x2 pool that halves it first."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be one image's (C, H, W), got {tuple(input_shape)}")
    if min(input_shape[1:]) < 2:
        raise ValueError(f"input_shape must have H, W >= 2 for {pool}, got {tuple(int(d) for d in input_shape)}")
    return tuple(int(d) for d in input_shape)


@register_model("convnet3")
class ThreeLayerConvNet(Sequential):
    """CS231n's three-layer ConvNet: conv - relu - 2x2 max pool - affine - relu - affine.

    The convolution has `num_filters` filters of size `filter_size` (odd), stride 1 and padding
    (filter_size - 1) // 2, so it keeps H and W; the pool halves them. Children: 0 Conv2d, 1 ReLU,
    2 MaxPool2d, 3 Flatten, 4 Linear, 5 ReLU, 6 Linear.

    `rng` draws the weights (a fresh unseeded generator if None).

    Input (N, C, H, W) -> class scores (N, num_classes).
    """

    def __init__(self, input_shape=(3, 32, 32), num_filters: int = 32, filter_size: int = 7, hidden_dim: int = 100,
                 num_classes: int = 10, weight_scale: float | None = None, *, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        c, h, w = _image_shape(input_shape, "the 2x2 pool")
        rng = resolve_rng(rng)
        if check_positive_int("filter_size", filter_size) % 2 == 0:
            raise ValueError(f"filter_size must be a positive odd integer (the convolution keeps H and W), "
                             f"got {filter_size!r}")
        super().__init__(
            Conv2d(c, num_filters, filter_size, 1, (filter_size - 1) // 2, rng=rng, dtype=dtype),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Linear(num_filters * (h // 2) * (w // 2), hidden_dim, rng=rng, dtype=dtype),
            ReLU(),
            Linear(hidden_dim, num_classes, rng=rng, dtype=dtype),
        )
        he_normal_init(self, rng, weight_scale)


@register_model("bn-cnn")
class ResNetCNN(Sequential):
    """A small ResNet with a choice of normalization (batch by default):

        stem:   conv 3x3 (widths[0]) - norm - 2x2 max pool - relu          H/2
        stages: one ResidualBlock per width; the first keeps the size, each later one halves it
        head:   global average pool - linear (num_classes)

    With the default widths (32, 64, 128), a 28x28 image runs at 14x14, 7x7 and 4x4: about 10 M
    multiply-adds per image, cheap enough to train on two CPU cores. Children: 0 Conv2d, 1 norm, 2 MaxPool2d,
    3 ReLU, 4.. ResidualBlocks, then GlobalAvgPool2d and Linear. The stem pools before its ReLU: max and
    ReLU commute (relu(max(a, b)) = max(relu(a), relu(b)), and the gradient goes to the same element or
    nowhere), and the ReLU then runs on a quarter of the values.

    - normalization: a name of `normlab.nn.normalization_names()`, built for (N, C, H, W) maps by
      `normlab.nn.build_norm`; with "none" the convolutions get biases.
    - norm_options: the normalization's options, e.g. {"groups": 8} or {"virtual_batch_size": 32}.
    - rng: draws the weights (a fresh unseeded generator if None).

    The normalization sits before each ReLU, as in ResNet; the residual blocks have no placement option.

    Input (N, C, H, W) -> class scores (N, num_classes).
    """

    # For normlab train (models/registry.py): random crops and flips help this model, so they are on by default;
    # it takes every normalization of the vocabulary.
    default_augment = True
    normalizes = "maps"

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10, widths=(32, 64, 128),
                 normalization: str = "batch", *, norm_options: dict | None = None,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        c = _image_shape(input_shape, "the stem's 2x2 pool")[0]
        rng = resolve_rng(rng)
        norm_options = dict(norm_options or {})
        widths = tuple(int(k) for k in widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive channel counts, got {widths}")
        layers = [
            Conv2d(c, widths[0], 3, 1, 1, bias=normalization == "none", rng=rng, dtype=dtype),
            build_norm(normalization, widths[0], spatial=True, dtype=dtype, **norm_options),
            MaxPool2d(2),
            ReLU(),
        ]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(ResidualBlock(widths[max(i - 1, 0)], width, stride, normalization, norm_options=norm_options,
                                        rng=rng, dtype=dtype))
        layers += [GlobalAvgPool2d(), Linear(widths[-1], num_classes, rng=rng, dtype=dtype)]
        super().__init__(*layers)
        self.normalization, self.norm_options = normalization, norm_options
        he_normal_init(self, rng)
