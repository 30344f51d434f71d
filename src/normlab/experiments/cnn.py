"""The convolutional track of the experiments (`normlab experiment NAME --model bn-cnn`): the project's small
ResNet (`bn-cnn`, `normlab.models.ResNetCNN`) slimmed to widths (8, 16) so that a NumPy run of a few thousand
28x28 images takes seconds, with any of the normalizations the experiments compare.

The network (28x28 input):

    conv 3x3 (8) - norm - 2x2 max pool - relu              14x14
    residual block 8 -> 8  (conv-norm-relu-conv-norm + x)  14x14
    residual block 8 -> 16, stride 2 (1x1 conv-norm skip)   7x7
    global average pool - linear (10)

Every normalization layer normalizes per channel (or per group of channels) over H x W as well: batch norm
here averages N x H x W values per channel (2 images of 14x14 are 392 values), where the fully connected
track's batch norm averages N.

The bn-cnn builder takes "batch", "group" and "none" (and "layer", "instance"), not batch renorm or ghost
batch norm, and its group norm uses gcd(C, 8) groups, which for 8 channels is instance norm. So the network
is built with batch norm and each BatchNorm2d is then replaced by the layer the arm asks for (the same
place, the same channels); "none" is built as such (its convolutions then get biases).
"""

from __future__ import annotations

import numpy as np

from normlab.models import build_model
from normlab.models.cnn import he_normal_init
from normlab.nn import BatchNorm2d, BatchRenorm2d, GhostBatchNorm2d, GroupNorm, Module, RenormSchedule

MODEL = "bn-cnn"
WIDTHS = (8, 16)
CHANNELS_PER_GROUP = 4  # group norm: 2 groups at 8 channels, 4 at 16 (the GN paper: 32 groups of 2-64)
NORMALIZATIONS = ("batch", "group", "renorm", "ghost", "none")


def replace_batchnorms(model: Module, make) -> None:
    """Replace every BatchNorm2d child of every module of `model` by make(num_channels) (a Module), in
    place: the replacement takes the child's name and place, so the forward order is unchanged."""
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if type(child) is BatchNorm2d:
                setattr(parent, name, make(child.num_features))


def build_cnn(normalization: str, input_shape: tuple[int, ...], num_classes: int, rng: np.random.Generator, *,
              momentum: float | None = 0.1, eps: float = 1e-5, virtual_batch_size: int = 8,
              renorm_schedule: RenormSchedule | None = None, weight_scale: float | None = None) -> Module:
    """The slimmed bn-cnn with `normalization` ("batch", "group", "renorm", "ghost" or "none").

    - momentum, eps: of every batch-statistics layer (batch, renorm, ghost); eps of group norm too.
    - virtual_batch_size: ghost batch norm's chunk of consecutive images.
    - renorm_schedule: batch renorm's rmax/dmax schedule (its default: Ioffe's 5000 / 40000 / 25000 steps).
    - weight_scale: every convolution and linear weight drawn from N(0, weight_scale^2) instead of He's
      normal (biases 0), from `rng` after the build, so every scale gets the same standard normal draw.
    Returns the model (a Sequential), in training mode.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    built = "none" if normalization == "none" else "batch"
    model = build_model(MODEL, input_shape=input_shape, num_classes=num_classes, rng=rng, normalization=built,
                        widths=WIDTHS)
    factories = {
        "batch": lambda c: BatchNorm2d(c, eps=eps, momentum=momentum),
        "group": lambda c: GroupNorm(c // CHANNELS_PER_GROUP, c, eps=eps),
        "renorm": lambda c: BatchRenorm2d(c, eps=eps, momentum=momentum, schedule=renorm_schedule),
        "ghost": lambda c: GhostBatchNorm2d(c, virtual_batch_size, eps=eps, momentum=momentum),
    }
    if normalization in factories:
        replace_batchnorms(model, factories[normalization])
    if weight_scale is not None:
        he_normal_init(model, rng, weight_scale)
    return model
