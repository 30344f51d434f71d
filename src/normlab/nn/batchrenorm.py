"""Batch renormalization modules (Ioffe, 2017): batch norm's parameters and buffers, PyTorch names, plus
the warm-up schedule of the clipping bounds rmax and dmax, driven by num_batches_tracked."""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.functional.batchrenorm import RenormSchedule
from normlab.nn.normalization import _BatchNorm


class _BatchRenorm(_BatchNorm):
    """Batch renormalization over (N, C, *) inputs (see `normlab.functional.batchrenorm_forward`).

    In training the output is gamma * (xhat_B * r + d) + beta with r clipped to [1/rmax, rmax] and d to
    [-dmax, dmax]; in evaluation it is batch norm's evaluation. The bounds follow `schedule` at the step
    num_batches_tracked (the number of training batches seen before the current one): by default
    Ioffe's schedule, plain batch norm for 5000 steps, then rmax 1 -> 3 by step 40000 and dmax 0 -> 5 by
    step 25000. The step is a buffer, so a model loaded from a state dict resumes the schedule where it
    stopped; the schedule itself is configuration, not state.

    Arguments as `BatchNorm1d`/`BatchNorm2d` (momentum 0.01 by default, Keras's renorm_momentum=0.99), plus
    schedule: a `RenormSchedule`; `RenormSchedule.constant(rmax, dmax)` for fixed bounds.

    Running statistics are always tracked: r and d are measured against them. The state dict has batch
    norm's keys (weight, bias, running_mean, running_var, num_batches_tracked).
    """

    _forward_fn = staticmethod(F.batchrenorm_forward)
    _backward_fn = staticmethod(F.batchrenorm_backward)
    _repr_keywords = ("eps", "momentum", "affine", "schedule")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.01, affine: bool = True,
                 *, schedule: RenormSchedule | None = None, convention: str = "pytorch", dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats=True, convention=convention,
                         dtype=dtype)
        if schedule is None:
            schedule = RenormSchedule()
        if not isinstance(schedule, RenormSchedule):
            raise TypeError(f"schedule must be a RenormSchedule or None, got {type(schedule).__name__}")
        self.schedule = schedule

    def clipping(self) -> tuple[float, float]:
        """(rmax, dmax) for the next training batch: the schedule at num_batches_tracked."""
        return self.schedule(int(self.num_batches_tracked))

    def _forward_options(self, momenta: list[float]) -> dict:
        rmax, dmax = self.clipping()
        return {**super()._forward_options(momenta), "rmax": rmax, "dmax": dmax}


class BatchRenorm1d(_BatchRenorm):
    """Batch renorm over (N, C) or (N, C, L) inputs: statistics per feature over the batch (and length)."""

    _expected_ndims = (2, 3)


class BatchRenorm2d(_BatchRenorm):
    """Spatial batch renorm over (N, C, H, W) inputs: statistics per channel over N, H and W."""

    _expected_ndims = (4,)
