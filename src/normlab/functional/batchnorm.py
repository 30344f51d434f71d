"""Batch normalization (Ioffe & Szegedy, 2015): per-feature statistics over the batch (and, for images,
over the spatial positions), then a per-feature scale and shift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from normlab.functional._checks import (
    check_cache,
    check_float_array,
    check_param,
    check_positive,
    check_probability,
    check_same_shape,
)
from normlab.functional._recomputed import RecomputedWhenNone
from normlab.functional.normalize import (
    Axes,
    backward_sums,
    compiled_statistics_in_range,
    compiled_twin,
    normalize,
    normalize_scale_shift_backward,
    scale_shift,
)
from normlab.functional.staged import staged_backward

if TYPE_CHECKING:
    from normlab.kernels.statistics import GroupStatistics

CONVENTIONS = ("pytorch", "keras")


@dataclass(frozen=True)
class BatchNormCache:
    """What the backward pass needs. Arrays are in the input's dtype; statistics keep reduced axes.

    After a compiled forward, `compiled` holds its float64 statistics, the backward runs compiled, and
    `xhat` (passed as None) is recomputed from x on first read.
    """

    x: np.ndarray  # (N, C, *): the input, for the staged backward
    xhat: np.ndarray = RecomputedWhenNone("_normalized_input")  # noqa: RUF009 (a descriptor) (N, C, *)
    mean: np.ndarray  # (1, C, 1...): batch mean in training, running mean in evaluation
    var: np.ndarray  # (1, C, 1...): biased batch variance in training, running variance in evaluation
    rstd: np.ndarray  # (1, C, 1...): 1 / sqrt(var + eps)
    gamma: np.ndarray  # (1, C, 1...)
    eps: float
    axes: Axes  # (0,) for (N, D); (0, 2, 3) for (N, C, H, W)
    training: bool
    compiled: GroupStatistics | None = None  # per channel, from the compiled forward

    def _normalized_input(self) -> np.ndarray:
        from normlab.kernels.normalize import normalized_channels

        return normalized_channels(_channels_view(self.x), self.compiled).reshape(self.x.shape)


def _channels_view(a: np.ndarray) -> np.ndarray:
    """(N, C, *) -> (N, C, S): the compiled kernels' layout, one group per channel."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def channel_axes(ndim: int) -> Axes:
    """The statistics axes of batch norm: every axis but the channel axis 1."""
    return (0, *range(2, ndim))


def per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (1, C, 1, ...) so it broadcasts against an (N, C, *) array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    convention: str = "pytorch",
    backend: str = "auto",
) -> tuple[np.ndarray, BatchNormCache]:
    """Batch normalization forward pass, for (N, D) and (N, C, H, W) inputs (any (N, C, *)).

    In training the statistics of each feature (channel) come from the batch: over N for (N, D), over
    N, H and W for (N, C, H, W) ("spatial batch norm"). The input is normalized with the batch mean and
    the biased batch variance, then scaled by gamma and shifted by beta. In evaluation the running
    statistics are used instead, so the output of a sample does not depend on the rest of its batch.

    Running statistics are updated in place, in training, when given. The new batch gets weight
    `momentum`:

        running_mean = (1 - momentum) * running_mean + momentum * batch_mean
        running_var  = (1 - momentum) * running_var  + momentum * batch_var_stored

    - convention="pytorch" (default): batch_var_stored is the unbiased variance, var * M / (M - 1), with
      M the number of values per channel; this is what torch.nn.BatchNorm stores.
    - convention="keras": batch_var_stored is the biased variance, as Keras and CS231n store it. Keras
      writes the same rule with the weight of the old value, keras_momentum = 1 - momentum (0.99 <-> 0.01);
      CS231n's momentum=0.9 is momentum=0.1 here.

    Inputs:
    - x: (N, D) or (N, C, H, W) float array; N * H * W > 1 in training.
    - gamma, beta: (C,) scale and shift.
    - running_mean, running_var: (C,) or None; required in evaluation.
    - training: batch statistics (True) or running statistics (False).
    - momentum: weight of the batch in the running averages, in [0, 1].
    - eps: added to the variance for stability, > 0.
    - backend: "auto", "numpy" or "numba" (see `normlab.kernels.backend`): who computes the training
      statistics and normalization; the backward follows the forward. Evaluation always runs NumPy.

    Returns (out, cache): out has x's shape and dtype.
    """
    x, gamma, beta = check_batchnorm_args(x, gamma, beta, eps, convention)
    check_probability("momentum", momentum)
    kernels = compiled_twin(backend, x)
    c = x.shape[1]
    axes = channel_axes(x.ndim)
    gamma_b, beta_b = per_channel(gamma, x.ndim), per_channel(beta, x.ndim)

    stats = None  # the compiled forward's statistics
    if training:
        m = x.size // c
        if m <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
        if kernels is not None:
            out, stats = kernels.normalize_channels(_channels_view(x), gamma, beta, eps)
            if not compiled_statistics_in_range(kernels, stats, x.dtype, m):
                stats = None  # values near the dtype's largest: the NumPy core rescales them
        if stats is None:
            xhat, mean, var, rstd = normalize(x, axes, eps)
        else:
            out, xhat = out.reshape(x.shape), None  # xhat is recomputed from x when read
            with np.errstate(over="ignore"):  # a variance beyond x's range is inf, as `normalize` gives it
                mean, var, rstd = (per_channel(v.astype(x.dtype), x.ndim) for v in (stats.mean, stats.var, stats.rstd))
        if running_mean is not None or running_var is not None:
            update_running_stats(running_mean, running_var, mean, var, m, momentum, convention)
    else:
        if running_mean is None or running_var is None:
            raise ValueError(
                "running_mean and running_var are required in evaluation mode (training=False), got "
                f"running_mean={None if running_mean is None else 'array'}, "
                f"running_var={None if running_var is None else 'array'}"
            )
        mean = per_channel(check_param("running_mean", running_mean, (c,), x.dtype), x.ndim)
        var = per_channel(check_param("running_var", running_var, (c,), x.dtype), x.ndim)
        rstd = inference_rstd(var, eps).astype(x.dtype, copy=False)
        xhat = (x - mean) * rstd

    if stats is None:
        out = scale_shift(xhat, gamma_b, beta_b)
    cache = BatchNormCache(x, xhat, mean, var, rstd, gamma_b, eps, axes, training, compiled=stats)
    return out, cache


def inference_rstd(running_var: np.ndarray, eps: float) -> np.ndarray:
    """1 / sqrt(running_var + eps): the constant scale of evaluation-mode batch norm, any shape."""
    return 1.0 / np.sqrt(running_var + eps)


def batchnorm_inference_affine(
    gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation-mode batch norm as one per-channel affine map, out = x * scale + shift:

        scale = gamma / sqrt(running_var + eps)
        shift = beta - running_mean * scale

    This is what folding a batch norm into the layer before it multiplies in
    (`normlab.interop.fold_batchnorm`).

    Inputs: gamma, beta, running_mean, running_var of shape (C,); eps > 0.
    Returns (scale, shift), each (C,), in the inputs' common dtype.
    """
    check_positive("eps", eps)
    c = np.shape(gamma)
    for name, a in (("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if np.shape(a) != c:
            raise ValueError(f"{name} must have gamma's shape {c}, got {np.shape(a)}")
    scale = gamma * inference_rstd(running_var, eps)  # (C,)
    return scale, beta - running_mean * scale


def check_batchnorm_args(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, convention: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate what every batch norm variant takes: x (N, C, *) floating, gamma and beta (C,) (returned
    in x's dtype), eps > 0, a known running-variance convention."""
    x = check_float_array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must be at least 2-D (N, C, ...), got {x.ndim}-D input of shape {x.shape}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    check_positive("eps", eps)
    c = x.shape[1]
    return x, check_param("gamma", gamma, (c,), x.dtype), check_param("beta", beta, (c,), x.dtype)


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    m: int,
    momentum: float,
    convention: str,
) -> None:
    """Move the running statistics (C,) in place towards one batch's mean and biased variance (C values,
    any shape), computed over m values per channel, by the rule in `batchnorm_forward`'s docstring."""
    c = mean.size
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is None:
            raise ValueError(f"running_mean and running_var must be given together; {name} is None")
        check_param(name, stat, (c,), stat.dtype)
    stored_var = var.reshape(c) * (m / (m - 1)) if convention == "pytorch" else var.reshape(c)
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean.reshape(c)
    running_var *= 1.0 - momentum
    running_var += momentum * stored_var


def batchnorm_backward(dout: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization backward pass, simplified to its closed form.

    In training, with M values per channel and g = dout * gamma:

        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      (means per channel)

    In evaluation the statistics are constants and dx = dout * gamma * rstd.

    Returns (dx, dgamma, dbeta): dx like x, dgamma and dbeta of shape (C,).
    """
    dout = _check_dout(dout, cache, "batchnorm_backward")
    if cache.compiled is not None and dout.dtype == cache.x.dtype:
        from normlab.kernels.normalize import normalize_channels_backward

        dx, dgamma, dbeta = normalize_channels_backward(
            _channels_view(dout), _channels_view(cache.x), cache.compiled, cache.gamma.reshape(-1)
        )
        return dx.reshape(dout.shape), dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)
    if cache.training:
        dx, dgamma, dbeta = normalize_scale_shift_backward(
            dout, cache.xhat, cache.rstd, cache.gamma, cache.axes, cache.axes
        )
    else:
        dx = dout * (cache.gamma * cache.rstd)
        # float32 sums for half-precision dout (a float16 sum over the batch overflows at 65504)
        dbeta, dgamma = backward_sums(dout, cache.xhat, cache.axes)
        dgamma, dbeta = dgamma.astype(dout.dtype, copy=False), dbeta.astype(dout.dtype, copy=False)
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


def batchnorm_backward_staged(dout: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization backward pass, walked node by node on the computational graph
    (mu, xmu, sq, var, sqrtvar, ivar, xhat, gammax, out): see `normlab.functional.staged`.

    Returns (dx, dgamma, dbeta), equal to `batchnorm_backward`'s.
    """
    dout = _check_dout(dout, cache, "batchnorm_backward_staged")
    constant_stats = None if cache.training else (cache.mean, cache.var)
    dx, dgamma, dbeta = staged_backward(
        dout, cache.x, cache.gamma, cache.eps, cache.axes, cache.axes, constant_stats
    )
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


def _check_dout(dout: np.ndarray, cache: BatchNormCache, backward: str) -> np.ndarray:
    check_cache(backward, cache, BatchNormCache, "batchnorm_forward")
    return check_same_shape("dout", dout, cache.x.shape)
