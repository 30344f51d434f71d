"""Ghost batch normalization (Hoffer, Hubara & Soudry, 2017): batch norm with statistics over virtual
batches ("ghost batches"), consecutive chunks of the batch, so the noise of the statistics is that of a
small batch while the step is taken on a large one.

The batch of N samples is cut into consecutive chunks of `virtual_batch_size` samples; when that does not
divide N the last chunk holds the remaining N % virtual_batch_size samples (fewer). Every chunk is batch
normalized with its own statistics, exactly as if the batch had been split by hand and
`batchnorm_forward` applied to each chunk in order:

- forward and backward are per chunk (the chunks do not interact), so dx of a chunk depends only on it,
  and dgamma, dbeta are the sums over the chunks;
- the running statistics are updated once per chunk, in order, each chunk weighted by its own number of
  values for the unbiased variance. So one ghost batch of G chunks moves the running averages as G
  batches do: with momentum m a chunk's weight decays by (1 - m) per later chunk.
- evaluation is batch norm's evaluation (running statistics), one sample at a time in effect.

With virtual_batch_size >= N there is one chunk and this is batch norm.

The equal chunks are one reshape, (G * V, C, *S) -> (G, V, C, *S), normalized by the core over the chunk's
samples and positions; the smaller last chunk, if any, is a second call of the core.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from normlab.functional._checks import check_cache, check_positive_int, check_probability, check_same_shape
from normlab.functional.batchnorm import (
    check_batchnorm_args,
    per_channel_affine,
    running_statistics,
    update_running_stats,
)
from normlab.functional.normalize import NormCache, is_half, normalize_affine, normalize_affine_backward

FORWARD = "ghost_batchnorm_forward"


def virtual_batch_sizes(n: int, virtual_batch_size: int) -> list[int]:
    """Sizes of the consecutive chunks a batch of n samples is cut into: [V, V, ..., V, n % V], the last
    entry present only when V does not divide n; [n] when V >= n."""
    virtual_batch_size = check_positive_int("virtual_batch_size", virtual_batch_size)
    full, rest = divmod(n, virtual_batch_size)
    return [virtual_batch_size] * full + ([rest] if rest else [])


def _momenta(momentum: float | Sequence[float], num_chunks: int) -> list[float]:
    if isinstance(momentum, (int, float, np.floating, np.integer)):
        return [check_probability("momentum", float(momentum))] * num_chunks
    momenta = list(momentum)
    if len(momenta) != num_chunks:
        raise ValueError(
            f"momentum must be a number or one value per virtual batch ({num_chunks}), got {len(momenta)} values"
        )
    return [check_probability("momentum", float(m)) for m in momenta]


def ghost_batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None, *, virtual_batch_size: int, training: bool = True,
    momentum: float | Sequence[float] = 0.1, eps: float = 1e-5, convention: str = "pytorch",
) -> tuple[np.ndarray, NormCache]:
    """Ghost batch normalization forward pass, for (N, D) and (N, C, H, W) inputs (any (N, C, *)).

    Equal to splitting x into consecutive chunks of `virtual_batch_size` samples (the last one smaller
    when it does not divide N), calling `batchnorm_forward` on each chunk in order with the same running
    statistics, and concatenating the outputs. See the module docstring.

    Inputs as `batchnorm_forward` (no backend: NumPy only), per chunk (in training every chunk needs more
    than 1 value per channel; the running statistics are updated once per chunk), plus:
    - virtual_batch_size: V >= 1, samples per chunk.
    - momentum: also a sequence with one value per chunk, len(virtual_batch_sizes(N, V)) (a cumulative
      average gives each chunk its own).

    Returns (out, cache): out has x's shape and dtype.
    """
    x, gamma, beta = check_batchnorm_args(x, gamma, beta, eps, convention)
    n, c, *spatial = x.shape
    sizes = virtual_batch_sizes(n, virtual_batch_size)
    momenta = _momenta(momentum, len(sizes))
    if not training:  # batch norm's evaluation: running statistics
        return per_channel_affine(x, gamma, beta, eps, FORWARD, stats=running_statistics(x, running_mean, running_var))

    positions = int(np.prod(spatial, dtype=np.int64))
    if sizes[-1] * positions <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel in every virtual batch when training: input of shape "
            f"{x.shape} with virtual_batch_size={virtual_batch_size} leaves a virtual batch of {sizes[-1]} "
            f"sample(s) with {sizes[-1] * positions} value(s) per channel"
        )

    stat_axes = (1, *range(3, x.ndim + 1))  # a chunk's samples and positions
    param_axes = (0, *stat_axes)  # and every chunk
    parts, outs, start, momenta = [], [], 0, iter(momenta)
    for size, run in itertools.groupby(sizes):  # runs of equal chunks: the full ones, a smaller last one
        count = len(list(run))
        stop = start + size * count
        out, part = normalize_affine(x[start:stop].reshape(count, size, c, *spatial), gamma, beta, stat_axes,
                                     param_axes, eps, forward=FORWARD, shape=(stop - start, c, *spatial))
        outs.append(out)
        parts.append(part)
        if running_mean is not None or running_var is not None:  # update_running_stats checks both
            for k in range(count):  # in order: the chunks are consecutive batches to the running averages
                update_running_stats(running_mean, running_var, part.mean[k], part.var[k], size * positions,
                                     next(momenta), convention)
        start = stop
    if len(parts) == 1:
        return outs[0], parts[0]  # equal chunks: the view (G, V, C, *S) is x itself
    return np.concatenate(outs), NormCache(FORWARD, x.shape, parts=tuple(parts))


def ghost_batchnorm_backward(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ghost batch normalization backward pass: batch norm's closed-form backward on every chunk (the
    core, with scale gamma * rstd of the chunk), dgamma and dbeta summed over the chunks.

    Returns (dx, dgamma, dbeta): dx like x, dgamma and dbeta of shape (C,).
    """
    check_cache("ghost_batchnorm_backward", cache, NormCache, FORWARD)
    if not cache.parts:  # one run of equal chunks, or evaluation
        return normalize_affine_backward(dout, cache, "ghost_batchnorm_backward", FORWARD)
    dout = check_same_shape("dout", dout, cache.shape)
    # Half-precision dout: every chunk in float32, the chunks' dgamma and dbeta summed in float32, then
    # everything rounded once.
    wide = dout.astype(np.float32) if is_half(dout.dtype) else dout
    dxs, dgamma, dbeta, start = [], 0, 0, 0
    for part in cache.parts:
        dx, dgamma_part, dbeta_part = normalize_affine_backward(wide[start : start + part.shape[0]], part,
                                                                "ghost_batchnorm_backward", FORWARD)
        dxs.append(dx)
        dgamma, dbeta, start = dgamma + dgamma_part, dbeta + dbeta_part, start + part.shape[0]
    return tuple(a.astype(dout.dtype, copy=False) for a in (np.concatenate(dxs), dgamma, dbeta))
