"""Precise batch norm statistics (Wu & Johnson, 2021, "Rethinking Batch in BatchNorm", Sec. 3; Detectron's
PreciseBN): replace every batch norm's running mean and variance by the exact population statistics of its
input over a set of batches, instead of the exponential moving average that training leaves behind.

The running average lags: with momentum 0.1 it is mostly the last ~20 batches, seen by weights that have
moved since, and it averages per-batch variances (which misses the spread of the batch means). Here each
layer's per-channel (count, mean, M2) is accumulated in float64 over the batches and merged across processes
with Chan's formula (`functional.merge_moments`): every sample of every process weighs the same.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from normlab.functional.batchnorm import channel_axes
from normlab.functional.moments import merge_moments, moments
from normlab.nn.module import Module
from normlab.nn.normalization import _BatchNorm
from normlab.nn.syncbatchnorm import SyncBatchNorm


def recompute_batchnorm_statistics(model: Module, batches: Iterable, *, comm=None) -> int:
    """Set the running statistics of every batch norm in `model` to the population statistics of its input
    over `batches` (on every process of `comm`), exactly.

    Every module with running statistics counts: BatchNorm1d/2d, SyncBatchNorm, GhostBatchNorm1d/2d,
    BatchRenorm1d/2d (a batch norm with track_running_stats=False has none and is left alone). Per channel:

        running_mean = mean of the layer's inputs over all samples of all batches
        running_var  = their unbiased variance, M2 / (n - 1), as torch stores it (the PyTorch convention;
                       a layer with convention="keras" gets the biased M2 / n, which is what it stores)

    with n the number of values per channel (samples, times H x W for 2-D layers). Not an average of
    per-batch variances: the spread of the batch means is part of the population variance.

    How the inputs are produced: the whole model runs forward in training mode on each batch (a Dropout
    drops, as in training, and draws from its generator), every batch norm normalizing with the batch's own
    statistics; ghost batch norm with its virtual batches; batch renorm with r and d measured against the
    running statistics as they were before the call. Within one process a SyncBatchNorm normalizes each batch
    as BatchNorm does, without communicating, so processes may hold different numbers of batches; only the
    accumulated statistics are merged.

    Nothing else changes: parameters and their gradients, momentum, num_batches_tracked and each module's
    training/evaluation mode are as before (the forward caches hold the last batch, as after any forward).

    Inputs:
    - model: a normlab Module taking (N, ...) batches.
    - batches: an iterable of arrays (N, ...) or of (x, y) pairs (x is used), e.g. K training batches.
      Batches may differ in size; their samples must have one shape. One process may have none.
    - comm: a `normlab.distributed.Communicator` whose processes all call this function (a collective); each
      process passes its own batches and every one ends with the same statistics. None: this process alone.

    Returns the number of samples the statistics were computed from (over all processes).
    """
    layers = running_statistics_layers(model)
    if not layers:
        raise ValueError(f"model has no batch norm layer with running statistics to recompute "
                         f"({type(model).__name__}: BatchNorm, SyncBatchNorm, GhostBatchNorm or BatchRenorm with "
                         f"track_running_stats=True)")
    accumulated = [_Moments(module.num_features) for _, module in layers]
    samples, error = 0, None
    try:
        samples = _forward_batches(model, layers, accumulated, batches)
    except Exception as e:  # noqa: BLE001 (told to the other processes first, then raised)
        error = e
    # One collective, reached by every process whatever happened here, so that no process waits forever.
    local = np.concatenate([[samples, error is not None], *(a.packed() for a in accumulated)])  # float64
    parts = local[None] if comm is None else np.asarray(comm.allgather(local))  # (P, 2 + sum 1 + 2C)
    if error is not None:
        raise error
    failed = np.flatnonzero(parts[:, 1])
    if failed.size:
        raise RuntimeError(f"recompute_batchnorm_statistics failed on process(es) {failed.tolist()}; "
                           f"see their error")
    total = int(parts[:, 0].sum())
    if total == 0:
        where = "" if comm is None else f" on any of the {parts.shape[0]} processes"
        raise ValueError(f"batches must hold at least one batch{where}, got none")
    statistics = []
    offset = 2  # each layer's [count, mean (C), M2 (C)] follows the samples and the error flag
    for name, module in layers:
        c = module.num_features
        counts = parts[:, offset]  # (P,)
        means, m2s = parts[:, offset + 1:offset + 1 + c], parts[:, offset + 1 + c:offset + 1 + 2 * c]  # (P, C)
        statistics.append(_population_statistics(name, module, counts, means, m2s))  # (C,) each, float64
        offset += 1 + 2 * c
    for (_, module), (mean, var) in zip(layers, statistics):  # all checked before any is written
        module.running_mean[...] = mean
        module.running_var[...] = var
    return total


def running_statistics_layers(model: Module) -> list[tuple[str, _BatchNorm]]:
    """(name, module) of every module of `model` with running statistics, in the order of named_modules."""
    return [(name or type(module).__name__, module) for name, module in model.named_modules()
            if isinstance(module, _BatchNorm) and module.running_mean is not None]


class _Moments:
    """Per-channel count, mean and M2 (float64) of the values seen so far, merged batch by batch."""

    def __init__(self, channels: int):
        self.count = 0.0
        self.mean = np.zeros(channels)  # (C,)
        self.m2 = np.zeros(channels)  # (C,)

    def add(self, x: np.ndarray) -> None:
        """Merge in x (N, C, *): its moments in float64, whatever x's dtype."""
        c = x.shape[1]
        count = x.size // c
        if count == 0:
            return
        mean, var = moments(x.astype(np.float64), channel_axes(x.ndim))  # (1, C, 1...) each
        self.count, self.mean, self.m2 = merge_moments(
            np.array([self.count, count]), np.stack([self.mean, mean.reshape(c)]),
            np.stack([self.m2, var.reshape(c) * count]))

    def packed(self) -> np.ndarray:
        """[count, mean (C), M2 (C)] in one float64 vector, for the processes' gather."""
        return np.concatenate([[self.count], self.mean, self.m2])


class _ThisProcessOnly:
    """Stands in for a SyncBatchNorm's communicator during the passes: a group of one process, with which
    SyncBatchNorm is BatchNorm and communicates nothing (processes may hold different numbers of batches)."""

    size, rank = 1, 0

    def __repr__(self) -> str:
        return "this process only (recompute_batchnorm_statistics)"


def _forward_batches(model: Module, layers: list[tuple[str, _BatchNorm]], accumulated: list[_Moments],
                     batches: Iterable) -> int:
    """Run the model in training mode on every batch, each layer's input merged into its accumulator and its
    buffers put back after each batch. Returns the number of samples. Restores everything it changes."""
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(module, [np.array(b, copy=True) for b in _buffers(module)]) for _, module in layers]
    own_forwards = [(module, module.__dict__.get("forward")) for _, module in layers]
    # A SyncBatchNorm normalizes each rank's batches locally during the pass (its communicator, or the world()
    # it would resolve on first use, is swapped out and put back), so unequal batch counts cannot hang it.
    communicators = [(module, module._comm) for _, module in layers if isinstance(module, SyncBatchNorm)]

    def recording(module: _BatchNorm, acc: _Moments):
        forward = module.forward

        def forward_and_record(x: np.ndarray) -> np.ndarray:
            out = forward(x)  # checks x's shape first
            acc.add(x)
            return out

        return forward_and_record

    samples, sample_shape = 0, None
    try:
        for (_, module), acc in zip(layers, accumulated):
            object.__setattr__(module, "forward", recording(module, acc))
        for module, _ in communicators:
            object.__setattr__(module, "_comm", _ThisProcessOnly())
        model.train()
        for i, batch in enumerate(batches):
            x = _batch_input(batch, i)
            if sample_shape is None:
                sample_shape = x.shape[1:]
            elif x.shape[1:] != sample_shape:
                raise ValueError(f"batches must all have samples of one shape: batch 0 has {sample_shape}, batch "
                                 f"{i} has {x.shape[1:]} (batch shape {x.shape})")
            model.forward(x)
            _restore(buffers)  # each batch sees the running statistics as they were
            samples += len(x)
    finally:
        for module, forward in own_forwards:
            if forward is None:
                module.__dict__.pop("forward", None)
            else:
                object.__setattr__(module, "forward", forward)
        for module, comm in communicators:
            object.__setattr__(module, "_comm", comm)
        for module, training in modes:
            object.__setattr__(module, "training", training)
        _restore(buffers)
    return samples


def _buffers(module: _BatchNorm) -> list[np.ndarray]:
    return [module.running_mean, module.running_var, module.num_batches_tracked]


def _restore(saved_buffers: list[tuple[_BatchNorm, list[np.ndarray]]]) -> None:
    for module, saved in saved_buffers:
        for buffer, value in zip(_buffers(module), saved):
            buffer[...] = value


def _batch_input(batch, index: int) -> np.ndarray:
    """The model's input in one item of `batches`: the item itself, or the first element of an (x, y) pair."""
    x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if not isinstance(x, np.ndarray):
        raise TypeError(f"batches must yield numpy arrays (N, ...) or (x, y) pairs, got {type(batch).__name__} "
                        f"at batch {index}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"batches must yield non-empty batches (N, ...) with N >= 1 and a sample shape, got "
                         f"shape {x.shape} at batch {index}")
    return x


def _population_statistics(name: str, module: _BatchNorm, counts: np.ndarray, means: np.ndarray,
                           m2s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(running_mean, running_var) of one layer from every process's (count (P,), mean (P, C), M2 (P, C))."""
    if counts.sum() == 0:
        raise ValueError(f"layer {name!r} ({type(module).__name__}) saw no input: the model's forward did not "
                         f"reach it")
    n, mean, m2 = merge_moments(counts, means, m2s)
    unbiased = module.convention == "pytorch"
    if unbiased and n < 2:
        raise ValueError(f"layer {name!r} saw {n:.0f} value per channel; the unbiased variance needs at least 2")
    var = m2 / (n - 1) if unbiased else m2 / n  # (C,)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var))):
        raise ValueError(f"layer {name!r} ({type(module).__name__}): its inputs are not finite (mean or variance "
                         f"is NaN or infinite); running statistics left unchanged")
    return mean, var
