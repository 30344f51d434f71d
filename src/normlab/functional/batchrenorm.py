"""Batch renormalization (Ioffe, 2017): batch norm whose training output is corrected towards what the
running statistics would give, so that training and evaluation compute (nearly) the same function.

Per channel, with the batch statistics mu_B, sigma_B = sqrt(var_B + eps) and the running statistics
mu = running_mean, sigma = sqrt(running_var + eps):

    xhat_B = (x - mu_B) / sigma_B                               (the one normalization core)
    r      = clip(sigma_B / sigma,     1/rmax, rmax)            treated as constants:
    d      = clip((mu_B - mu) / sigma, -dmax,  dmax)            no gradient flows through r or d
    out    = gamma * (xhat_B * r + d) + beta

Unclipped, xhat_B * r + d = (x - mu) / sigma exactly: the evaluation-mode output. With rmax = 1 and
dmax = 0 it is batch norm. r and d are computed from the running statistics *before* this batch updates
them, as in the paper's algorithm.

Two choices that differ from the paper's text, both so that batch renorm is a drop-in batch norm:
- The running statistics are batch norm's: running_mean and running_var, updated by
  `batchnorm_forward`'s rule and convention (PyTorch's unbiased running variance by default), rather
  than a moving average of sigma_B. sigma adds eps to running_var as evaluation does, so evaluation is
  batch norm's evaluation and state dicts interchange with BatchNorm.
- The default momentum is 0.01 (Keras's renorm_momentum=0.99), not batch norm's 0.1: r and d are only as
  good as the running statistics they divide by.

The warm-up schedule of rmax and dmax (plain batch norm first, then a linear relaxation) is
`RenormSchedule`; the modules evaluate it at their num_batches_tracked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.functional._checks import check_non_negative_int, check_probability
from normlab.functional.batchnorm import (
    check_batchnorm_args,
    per_channel_affine,
    running_statistics,
    update_running_stats,
    values_per_channel,
)
from normlab.functional.normalize import Normalized, NormCache, inverse_std, normalize_affine_backward


def check_clipping(rmax: float, dmax: float) -> None:
    """rmax >= 1 (r is clipped to [1/rmax, rmax], empty below 1) and dmax >= 0 (d to [-dmax, dmax])."""
    if not rmax >= 1:
        raise ValueError(f"rmax must be >= 1 (r is clipped to [1/rmax, rmax]), got rmax={rmax!r}")
    if not dmax >= 0:
        raise ValueError(f"dmax must be >= 0 (d is clipped to [-dmax, dmax]), got dmax={dmax!r}")


@dataclass(frozen=True)
class RenormSchedule:
    """rmax and dmax as functions of the training step: plain batch norm (rmax = 1, dmax = 0) for the
    first `warmup_steps` steps, then linear ramps reaching `rmax` at step `rmax_full_at` and `dmax` at
    step `dmax_full_at`, constant after. The defaults are Ioffe's (2017): rmax 1 -> 3 over steps
    5000 -> 40000, dmax 0 -> 5 over steps 5000 -> 25000.

    For step t:

        rmax(t) = 1 + (rmax - 1) * ramp(t, rmax_full_at)
        dmax(t) =      dmax      * ramp(t, dmax_full_at)
        ramp(t, end) = clip((t - warmup_steps) / (end - warmup_steps), 0, 1)    (1 from `end` on)

    The step is the number of training batches seen before the current one (the modules pass their
    num_batches_tracked before counting the batch), so the first batch is step 0 and a model restored
    from a checkpoint continues the schedule where it stopped.

    `RenormSchedule.constant(rmax, dmax)` clips with fixed bounds from step 0.
    """

    rmax: float = 3.0
    dmax: float = 5.0
    warmup_steps: int = 5000
    rmax_full_at: int = 40_000
    dmax_full_at: int = 25_000

    def __post_init__(self) -> None:
        check_clipping(self.rmax, self.dmax)
        warmup = check_non_negative_int("warmup_steps", self.warmup_steps)
        for name in ("rmax_full_at", "dmax_full_at"):
            end = check_non_negative_int(name, getattr(self, name))
            if end < warmup:
                raise ValueError(f"{name} must be >= warmup_steps={warmup}, got {name}={end}")

    @classmethod
    def constant(cls, rmax: float, dmax: float) -> RenormSchedule:
        """Fixed bounds at every step (no warm-up)."""
        return cls(rmax=rmax, dmax=dmax, warmup_steps=0, rmax_full_at=0, dmax_full_at=0)

    def _ramp(self, step: int, end: int) -> float:
        if step >= end:
            return 1.0
        if step <= self.warmup_steps:
            return 0.0
        return (step - self.warmup_steps) / (end - self.warmup_steps)

    def __call__(self, step: int) -> tuple[float, float]:
        """(rmax, dmax) at training step `step` (>= 0)."""
        step = check_non_negative_int("step", step)
        rmax = 1.0 + (self.rmax - 1.0) * self._ramp(step, self.rmax_full_at)
        dmax = self.dmax * self._ramp(step, self.dmax_full_at)
        return rmax, dmax


def batchrenorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray, *,
    training: bool = True, momentum: float = 0.01, eps: float = 1e-5, rmax: float = 3.0, dmax: float = 5.0,
    convention: str = "pytorch",
) -> tuple[np.ndarray, NormCache]:
    """Batch renormalization forward pass, for (N, D) and (N, C, H, W) inputs (any (N, C, *)).

    In training: out = gamma * (xhat_B * r + d) + beta with the clipped corrections r and d
    (see the module docstring); then the running statistics are updated in place exactly as
    `batchnorm_forward` updates them. In evaluation: batch norm in evaluation (running statistics),
    whatever rmax and dmax.

    Inputs as `batchnorm_forward` (no backend: NumPy only; eps is added to both variances; running_mean and
    running_var are required in both modes, r and d divide by them), plus:
    - rmax: r is clipped to [1/rmax, rmax], rmax >= 1; dmax: d is clipped to [-dmax, dmax], dmax >= 0.
      rmax = 1 and dmax = 0 give batch norm exactly.

    Returns (out, cache): out has x's shape and dtype.
    """
    x, gamma, beta = check_batchnorm_args(x, gamma, beta, eps, convention)
    check_probability("momentum", momentum)
    check_clipping(rmax, dmax)
    if running_mean is None or running_var is None:
        raise ValueError(
            "running_mean and running_var are required by batch renorm (r and d are measured against them), "
            f"got running_mean={None if running_mean is None else 'array'}, "
            f"running_var={None if running_var is None else 'array'}"
        )
    mu, var_running = running_statistics(x, running_mean, running_var)  # (1, C, 1...)
    if not training:  # batch norm's evaluation, with r = 1 and d = 0
        return per_channel_affine(x, gamma, beta, eps, "batchrenorm_forward", stats=(mu, var_running))

    m = values_per_channel(x)

    def correction(batch: Normalized) -> tuple[np.ndarray, np.ndarray]:
        """r = clip(sigma_B / sigma, 1/rmax, rmax), d = clip((mu_B - mu) / sigma, -dmax, dmax), (1, C, 1...), with
        the running statistics before this batch's update (batch.rstd is 1 / sigma_B)."""
        running_rstd = inverse_std(var_running, eps)  # 1 / sigma
        r = np.clip(running_rstd / batch.rstd, 1.0 / rmax, rmax)
        return r, np.clip((batch.mean - mu) * running_rstd, -dmax, dmax)

    out, cache = per_channel_affine(x, gamma, beta, eps, "batchrenorm_forward", correction=correction)
    update_running_stats(running_mean, running_var, cache.mean, cache.var, m, momentum, convention)
    return out, cache


def batchrenorm_backward(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch renormalization backward pass, with r and d held constant (as the paper prescribes).

    Derivation, per channel (sums and means over the M values of the channel). The forward is
    out = gamma * (r * xhat_B + d) + beta, so

        dL/dxhat_B = dout * gamma * r

    and gamma * r is one constant per channel. The core's backward is linear in its g = dL/dxhat_B and
    rstd is constant per channel, so the constant factor moves into its scale:

        dx     = rstd * (g - mean(g) - xhat_B * mean(g * xhat_B))            with g = gamma * r * dout
               = (gamma * r * rstd) * (dout - mean(dout) - xhat_B * mean(dout * xhat_B))
        dgamma = sum(dout * (r * xhat_B + d)) = r * sum(dout * xhat_B) + d * sum(dout)
        dbeta  = sum(dout)

    The core returns sum(dout) and sum(dout * xhat_B) on the way, so nothing is reduced twice. With
    r = 1 and d = 0 this is batch norm's backward; in evaluation it is batch norm's evaluation backward.

    Returns (dx, dgamma, dbeta): dx like x, dgamma and dbeta of shape (C,).
    """
    return normalize_affine_backward(dout, cache, "batchrenorm_backward", "batchrenorm_forward")
