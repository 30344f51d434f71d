"""Batch normalization (Ioffe & Szegedy, 2015): per-feature statistics over the batch (and, for images,
over the spatial positions), then a per-feature scale and shift."""

from __future__ import annotations

import numpy as np

from normlab.functional._checks import check_float_array, check_param, check_positive, check_probability
from normlab.functional.normalize import Axes, NormCache, inverse_std, normalize_affine, normalize_affine_backward
from normlab.functional.staged import staged_backward_of

CONVENTIONS = ("pytorch", "keras")


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
) -> tuple[np.ndarray, NormCache]:
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
    if not training:
        stats = running_statistics(x, running_mean, running_var)
        return per_channel_affine(x, gamma, beta, eps, "batchnorm_forward", backend=backend, stats=stats)
    m = values_per_channel(x)
    out, cache = per_channel_affine(x, gamma, beta, eps, "batchnorm_forward", layout="channels", backend=backend)
    if running_mean is not None or running_var is not None:
        update_running_stats(running_mean, running_var, cache.mean, cache.var, m, momentum, convention)
    return out, cache


def per_channel_affine(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, forward: str,
                       **core) -> tuple[np.ndarray, NormCache]:
    """`normalize_affine` with batch norm's axes: statistics and parameters per channel (axis 1), gamma and
    beta (C,); `core`: its layout, backend, stats and correction."""
    axes = channel_axes(x.ndim)
    return normalize_affine(x, gamma, beta, axes, axes, eps, forward=forward, **core)


def values_per_channel(x: np.ndarray) -> int:
    """M, the values per channel of an (N, C, *) batch in training: more than 1, or a ValueError."""
    m = x.size // x.shape[1]
    if m <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
    return m


def running_statistics(
    x: np.ndarray, running_mean: np.ndarray | None, running_var: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The statistics of evaluation mode: running_mean and running_var (C,), both required, as
    (1, C, 1...) arrays in x's dtype."""
    if running_mean is None or running_var is None:
        raise ValueError(
            "running_mean and running_var are required in evaluation mode (training=False), got "
            f"running_mean={None if running_mean is None else 'array'}, "
            f"running_var={None if running_var is None else 'array'}"
        )
    c = x.shape[1]
    return (per_channel(check_param("running_mean", running_mean, (c,), x.dtype), x.ndim),
            per_channel(check_param("running_var", running_var, (c,), x.dtype), x.ndim))


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
    scale = gamma * inverse_std(running_var, eps)  # (C,)
    return scale, beta - running_mean * scale


def check_batchnorm_args(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, convention: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate what every batch norm variant takes: x (N, C, *) floating, gamma and beta (C,) (returned
    in x's dtype), eps > 0, a known running-variance convention."""
    x = check_float_array("x", x, min_ndim=2, layout="(N, C, ...)")
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


def batchnorm_backward(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization backward pass in closed form (`normalize_affine_backward`, means per channel).
    Returns (dx, dgamma, dbeta): dx like x, dgamma and dbeta of shape (C,)."""
    return normalize_affine_backward(dout, cache, "batchnorm_backward", "batchnorm_forward")


def batchnorm_backward_staged(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization backward walked node by node on the staged graph of `normlab.functional.staged`.
    Returns (dx, dgamma, dbeta), equal to `batchnorm_backward`'s."""
    return staged_backward_of(dout, cache, "batchnorm_backward_staged", "batchnorm_forward")
