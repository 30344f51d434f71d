"""Group normalization (Wu & He, 2018): the channels of each sample are split into groups and each group
is normalized over its channels and spatial positions. One group is layer norm (with a per-channel
affine); one channel per group is instance norm."""

from __future__ import annotations

import numpy as np

from normlab.functional._checks import check_float_array, check_param, check_positive, check_positive_int
from normlab.functional.normalize import NormCache, normalize_affine, normalize_affine_backward

FORWARDS = ("groupnorm_forward", "instancenorm_forward")  # one operation under two names


def groupnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int, *, eps: float = 1e-5,
    backend: str = "auto",
) -> tuple[np.ndarray, NormCache]:
    """Group normalization forward pass.

    Inputs:
    - x: (N, C, H, W) or (N, C) float array (any (N, C, *)).
    - gamma, beta: (C,) per-channel scale and shift.
    - num_groups: G, a divisor of C. G = 1 normalizes each sample over all its channels; G = C is
      instance norm.
    - eps: added to the variance, > 0.
    - backend: "auto", "numpy" or "numba" (see `normlab.kernels.backend`); the backward follows.

    Returns (out, cache), out of x's shape and dtype.
    """
    return _groupnorm_forward(x, gamma, beta, num_groups, eps, backend, "groupnorm_forward")


def _groupnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int, eps: float, backend: str, forward: str
) -> tuple[np.ndarray, NormCache]:
    x = check_float_array("x", x, min_ndim=2, layout="(N, C, ...)")
    check_positive("eps", eps)
    n, c, *spatial = x.shape
    num_groups = check_positive_int("num_groups", num_groups)
    if c % num_groups:
        raise ValueError(f"num_groups must divide the number of channels C={c}, got num_groups={num_groups}")
    gamma = check_param("gamma", gamma, (c,), x.dtype)
    beta = check_param("beta", beta, (c,), x.dtype)
    grouped = (n, num_groups, c // num_groups, *spatial)  # (N, G, C // G, *S): a group is axes 2..
    stat_axes, param_axes = tuple(range(2, len(grouped))), (0, *range(3, len(grouped)))  # gamma per channel
    return normalize_affine(x.reshape(grouped), gamma, beta, stat_axes, param_axes, eps, forward=forward,
                            shape=x.shape, layout="rows", backend=backend)


def groupnorm_backward(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group normalization backward in closed form (`normalize_affine_backward`, means over each group).
    Returns (dx, dgamma, dbeta): dx like x, dgamma and dbeta of shape (C,)."""
    return normalize_affine_backward(dout, cache, "groupnorm_backward", *FORWARDS)


def instancenorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5, backend: str = "auto"
) -> tuple[np.ndarray, NormCache]:
    """Instance normalization: each channel of each sample normalized over its spatial positions. The
    same as `groupnorm_forward` with num_groups = C. x: (N, C, *S) with at least one spatial axis."""
    x = check_float_array("x", x, min_ndim=3, layout="(N, C, spatial...) for instance norm")
    if np.prod(x.shape[2:]) <= 1:
        raise ValueError(f"Expected more than 1 spatial element per channel for instance norm, got input size {x.shape}")
    return _groupnorm_forward(x, gamma, beta, x.shape[1], eps, backend, "instancenorm_forward")


def instancenorm_backward(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of `instancenorm_forward`: (dx, dgamma, dbeta)."""
    return normalize_affine_backward(dout, cache, "instancenorm_backward", *FORWARDS)
