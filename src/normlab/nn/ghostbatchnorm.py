"""Ghost batch normalization modules (Hoffer et al., 2017): batch norm's parameters and buffers, PyTorch
names, with training statistics over virtual batches of `virtual_batch_size` consecutive samples."""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.checks import check_positive_int
from normlab.nn.normalization import _BatchNorm


class _GhostBatchNorm(_BatchNorm):
    """Ghost batch normalization over (N, C, *) inputs (see `normlab.functional.ghost_batchnorm_forward`).

    In training each chunk of `virtual_batch_size` consecutive samples (the last one smaller when it does
    not divide N) is normalized with its own statistics. Each chunk counts as one batch: it updates the
    running statistics in order and adds 1 to num_batches_tracked, so the module behaves exactly like
    the batch norm module applied to the chunks one after another (momentum=None included). In
    evaluation it is batch norm's evaluation. Without running statistics (track_running_stats=False)
    evaluation uses per-chunk statistics too.

    Arguments as `BatchNorm1d`/`BatchNorm2d`, plus virtual_batch_size (>= 1, samples per chunk).
    """

    _forward_fn = staticmethod(F.ghost_batchnorm_forward)
    _backward_fn = staticmethod(F.ghost_batchnorm_backward)
    _repr_keywords = (*_BatchNorm._repr_keywords, "virtual_batch_size")

    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True, *,
                 convention: str = "pytorch", dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, convention=convention,
                         dtype=dtype)
        self.virtual_batch_size = check_positive_int("virtual_batch_size", virtual_batch_size)

    def _batches_in(self, x: np.ndarray) -> int:
        return len(F.virtual_batch_sizes(x.shape[0], self.virtual_batch_size))

    def _forward_options(self, momenta: list[float]) -> dict:
        options = super()._forward_options(momenta)
        return {**options, "momentum": momenta, "virtual_batch_size": self.virtual_batch_size}  # one per chunk


class GhostBatchNorm1d(_GhostBatchNorm):
    """Ghost batch norm over (N, C) or (N, C, L) inputs."""

    _expected_ndims = (2, 3)


class GhostBatchNorm2d(_GhostBatchNorm):
    """Spatial ghost batch norm over (N, C, H, W) inputs: statistics per channel over a chunk's samples,
    H and W."""

    _expected_ndims = (4,)
