"""Synchronized batch normalization: batch norm whose statistics come from the global batch, every
process's part of it, instead of the few samples one process sees.

Forward (training), per channel:
    1. each process computes its count, mean and M2 with the core (`moments`),
    2. the (n, mean, M2) of all processes are gathered in float64 and merged in rank order
       (`merge_moments`), so every process gets the same global mean and variance, exactly, however
       unequal the local batches,
    3. each process normalizes its part with the global statistics (`normalize_with_stats`) and updates
       the running statistics with them: identical on every process.

Backward (training): the gradient of the input needs, per channel, sum(dout) and sum(dout * xhat) over the
global batch. Each process computes its local sums with the core (`backward_sums`), one all-reduce adds
them up in float64, and the core turns them into this process's dx (`normalize_backward_from_sums`).
weight.grad and bias.grad receive the local sums, like every other parameter's gradient: the data-parallel
gradient all-reduce adds them up (see `normlab.distributed.data_parallel`).

Out of training mode, or on a single process, it is exactly BatchNorm (and communicates nothing): in
evaluation each process may see a different number of batches, so no collective may happen there.

The processes are a communicator, any object with `rank`, `size`, `allgather(buf)` and
`allreduce_sum(buf)` as `normlab.distributed.Communicator` has them. This layer sits below
`normlab.distributed` and does not import it when it loads: the default communicator, `world()`, and
Chan's merge are looked up on the first synchronized forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from normlab.functional._checks import check_cache, check_probability, check_same_shape
from normlab.functional.batchnorm import (
    batchnorm_backward,
    batchnorm_forward,
    channel_axes,
    check_batchnorm_args,
    per_channel,
    update_running_stats,
)
from normlab.functional.moments import merge_moments
from normlab.functional.normalize import (
    Axes,
    NormCache,
    backward_sums,
    moments,
    normalize_backward_from_sums,
    normalize_with_stats,
    scale_shift,
)
from normlab.nn.module import Module
from normlab.nn.normalization import BatchNorm1d, BatchNorm2d, _BatchNorm

if TYPE_CHECKING:
    from normlab.distributed.comm import Communicator

# The batch norms whose math SyncBatchNorm reproduces; other _BatchNorm subclasses (batch renorm, ghost
# batch norm) have math of their own.
CONVERTIBLE = (BatchNorm1d, BatchNorm2d)


@dataclass(frozen=True)
class SyncNormCache:
    """What the synchronized backward needs. Arrays in the input's dtype; statistics keep reduced axes."""

    xhat: np.ndarray  # (N_local, C, *)
    rstd: np.ndarray  # (1, C, 1...): from the global variance
    gamma: np.ndarray  # (1, C, 1...)
    axes: Axes  # (0,) for (N, C); (0, 2, 3) for (N, C, H, W)
    count: int  # values per channel in the global batch
    comm: Communicator  # the backward's all-reduce goes to the same processes


def sync_batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray | None = None,
                           running_var: np.ndarray | None = None, *, comm: Communicator, momentum: float = 0.1,
                           eps: float = 1e-5, convention: str = "pytorch"
                           ) -> tuple[np.ndarray, SyncNormCache | NormCache]:
    """Batch norm in training mode with statistics over the global batch: x on this process and the
    inputs of the same call on every other process of `comm`. A collective operation: every process calls it.

    Inputs as `batchnorm_forward` (training=True), x (N_local, C, *) with N_local >= 0 and more than one
    value per channel over all processes. Running statistics are updated in place with the global
    statistics, so they are identical on every process.

    Returns (out, cache): out has x's shape and dtype and equals this process's rows of batch norm on the
    concatenated global batch. With one process this is `batchnorm_forward` (and its cache).
    """
    if comm.size == 1:
        return batchnorm_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=momentum,
                                 eps=eps, convention=convention)
    x, gamma, beta = check_batchnorm_args(x, gamma, beta, eps, convention)
    check_probability("momentum", momentum)
    axes = channel_axes(x.ndim)
    count, mean, var = _global_moments(x, axes, comm)  # mean, var: (C,) float64
    if running_mean is not None or running_var is not None:
        update_running_stats(running_mean, running_var, mean, var, count, momentum, convention)
    mean, var = (per_channel(s.astype(x.dtype), x.ndim) for s in (mean, var))  # (1, C, 1...)
    xhat, _, _, rstd = normalize_with_stats(x, mean, var, eps)
    gamma, beta = per_channel(gamma, x.ndim), per_channel(beta, x.ndim)
    return scale_shift(xhat, gamma, beta), SyncNormCache(xhat, rstd, gamma, axes, count, comm)


def _global_moments(x: np.ndarray, axes: Axes, comm: Communicator) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, mean, biased var) per channel over every process's x; mean and var (C,) float64."""

    c = x.shape[1]
    local_count = x.size // c
    local = np.zeros(1 + 2 * c)  # [n, mean (C), M2 (C)], float64
    local[0] = local_count
    if local_count:
        mean, var = moments(x, axes)  # (1, C, 1...) each
        local[1:1 + c] = mean.reshape(c)
        local[1 + c:] = var.reshape(c) * local_count
    parts = comm.allgather(local)  # (P, 1 + 2C)
    total = int(parts[:, 0].sum())
    if total <= 1:
        raise ValueError(f"Expected more than 1 value per channel over all {comm.size} processes when "
                         f"training, got {total} (this process, rank {comm.rank}: input size {x.shape})")
    n, mean, m2 = merge_moments(parts[:, 0], parts[:, 1:1 + c], parts[:, 1 + c:])
    return total, mean, m2 / n


def sync_batchnorm_backward(dout: np.ndarray, cache: SyncNormCache | NormCache
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of `sync_batchnorm_forward` (see the module docstring); a collective operation, like the forward.

    Returns (dx, dgamma, dbeta): dx like this process's x; dgamma and dbeta (C,) are this process's
    contributions (the local sums), which the data-parallel gradient all-reduce adds up. Given a
    `NormCache` (one process, or evaluation) it is `batchnorm_backward`.
    """
    if isinstance(cache, NormCache):
        return batchnorm_backward(dout, cache)
    check_cache("sync_batchnorm_backward", cache, SyncNormCache, "sync_batchnorm_forward")
    dout = check_same_shape("dout", dout, cache.xhat.shape)
    g_sum, gxhat_sum = backward_sums(dout, cache.xhat, cache.axes)  # (1, C, 1...) each, local
    c = g_sum.size
    total = np.concatenate([g_sum.reshape(c), gxhat_sum.reshape(c)]).astype(np.float64)  # (2C,)
    cache.comm.allreduce_sum(total)
    global_g_sum, global_gxhat_sum = (s.astype(dout.dtype).reshape(g_sum.shape) for s in (total[:c], total[c:]))
    dx = normalize_backward_from_sums(dout, cache.xhat, cache.gamma * cache.rstd, global_g_sum, global_gxhat_sum,
                                      cache.count)
    return dx, gxhat_sum.reshape(c), g_sum.reshape(c)


class SyncBatchNorm(_BatchNorm):
    """Batch norm over (N, C, *) inputs whose training statistics come from the global batch of all
    processes of `comm` (default: `normlab.distributed.world()`, looked up on the first training forward).
    Same arguments, parameters, buffers and state dict as BatchNorm1d/2d.

    In training every process must call forward and backward the same number of times, in the same order
    as its other collectives; local batches may differ in size (even be empty) as long as the global
    batch has more than one value per channel. In evaluation it is BatchNorm and communicates nothing.
    """

    _backward_fn = staticmethod(sync_batchnorm_backward)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, convention: str = "pytorch", dtype=np.float32,
                 comm: Communicator | None = None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, convention=convention,
                         dtype=dtype)
        self._comm = comm

    @property
    def comm(self) -> Communicator:
        """The processes whose batches make the global batch (`world()` unless one was given)."""
        if self._comm is None:
            from normlab.distributed.comm import world

            self._comm = world()
        return self._comm

    def _normalize_batch(self, x, gamma, beta, running_mean, running_var, training, momenta):
        # Outside training mode batch statistics (track_running_stats=False) stay local, as the module says.
        if not (training and self.training):
            return super()._normalize_batch(x, gamma, beta, running_mean, running_var, training, momenta)
        options = self._forward_options(momenta)
        return sync_batchnorm_forward(x, gamma, beta, running_mean, running_var, comm=self.comm, **options)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, comm={'world()' if self._comm is None else repr(self._comm)}"

    @classmethod
    def convert_sync_batchnorm(cls, model: Module, comm: Communicator | None = None) -> Module:
        """`convert_sync_batchnorm(model, comm)`, under torch's name for it."""
        return convert_sync_batchnorm(model, comm)


def convert_sync_batchnorm(model: Module, comm: Communicator | None = None) -> Module:
    """Replace every BatchNorm1d and BatchNorm2d in `model` by a SyncBatchNorm over `comm` (default:
    `world()`) that shares its parameters and buffers, so the state dict does not change.

    Children are replaced in place, keeping their names and order; the return value is `model`, or the
    new module when `model` itself is a batch norm. Raises TypeError for another batch norm subclass,
    whose math SyncBatchNorm would not reproduce.
    """
    if type(model) in CONVERTIBLE:
        return _synchronized(model, comm)
    if isinstance(model, _BatchNorm) and not isinstance(model, SyncBatchNorm):
        raise TypeError(f"convert_sync_batchnorm can convert {[t.__name__ for t in CONVERTIBLE]}, got "
                        f"{type(model).__name__}, whose math SyncBatchNorm would not reproduce")
    for name, child in list(model._modules.items()):
        setattr(model, name, convert_sync_batchnorm(child, comm))
    return model


def _synchronized(bn: _BatchNorm, comm: Communicator | None) -> SyncBatchNorm:
    gamma, _ = bn._gamma_beta()
    sync = SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                         convention=bn.convention, dtype=gamma.dtype, comm=comm)
    sync._expected_ndims = bn._expected_ndims  # keep BatchNorm1d's (2-D or 3-D) and BatchNorm2d's (4-D) check
    for name, value in [*bn._parameters.items(), *bn._buffers.items()]:  # shared, not copied
        setattr(sync, name, value)
    return sync.train(bn.training)
