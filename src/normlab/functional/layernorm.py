"""Layer normalization (Ba, Kiros & Hinton, 2016): each sample normalized over its own features, so the
output never depends on the rest of the batch and training and evaluation compute the same thing."""

from __future__ import annotations

import numpy as np

from normlab.functional._checks import check_float_array, check_param, check_positive
from normlab.functional.normalize import NormCache, normalize_affine, normalize_affine_backward
from normlab.functional.staged import staged_backward_of


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5, backend: str = "auto"
) -> tuple[np.ndarray, NormCache]:
    """Layer normalization forward pass.

    Every sample (row of x) is normalized over all its features: over D for (N, D), over C, H and W for
    (N, C, H, W). The affine is either elementwise over the normalized shape, as torch.nn.LayerNorm
    (gamma of shape x.shape[1:]), or per channel (gamma of shape (C,)), as is common in CNNs.

    Inputs:
    - x: (N, D) or (N, C, H, W) float array (any (N, *F) with at least 2 dimensions).
    - gamma, beta: x.shape[1:] or (C,).
    - eps: added to the variance, > 0.
    - backend: "auto", "numpy" or "numba" (see `normlab.kernels.backend`); the backward follows.

    Returns (out, cache), out of x's shape and dtype.
    """
    x = check_float_array("x", x, min_ndim=2, layout="(N, features...)")
    check_positive("eps", eps)
    per_channel = isinstance(gamma, np.ndarray) and gamma.shape == (x.shape[1],) and x.ndim > 2
    param_shape = (x.shape[1],) if per_channel else x.shape[1:]
    gamma = check_param("gamma", gamma, param_shape, x.dtype)
    beta = check_param("beta", beta, param_shape, x.dtype)
    # per channel: shared over the samples and the positions of a channel; else one per feature, over the samples
    param_axes = (0, *range(2, x.ndim)) if per_channel else (0,)
    stat_axes = tuple(range(1, x.ndim))  # (N, *F): every feature of a sample
    return normalize_affine(x, gamma, beta, stat_axes, param_axes, eps, forward="layernorm_forward", layout="rows",
                            backend=backend)


def layernorm_backward(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer normalization backward in closed form (`normalize_affine_backward`, means over each sample's
    features). Returns (dx, dgamma, dbeta), dgamma and dbeta shaped like gamma."""
    return normalize_affine_backward(dout, cache, "layernorm_backward", "layernorm_forward")


def layernorm_backward_staged(dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer normalization backward on the staged graph of `normlab.functional.staged`, the statistics over
    each sample's features. Returns (dx, dgamma, dbeta), equal to `layernorm_backward`'s."""
    return staged_backward_of(dout, cache, "layernorm_backward_staged", "layernorm_forward")
