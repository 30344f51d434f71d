"""Group normalization (Wu & He, 2018): the channels of each sample are split into groups and each group
is normalized over its channels and spatial positions. One group is layer norm (with a per-channel
affine); one channel per group is instance norm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from normlab.functional._checks import check_cache, check_float_array, check_param, check_positive, check_same_shape
from normlab.functional._recomputed import RecomputedWhenNone
from normlab.functional.normalize import (
    compiled_statistics_in_range,
    compiled_twin,
    normalize,
    normalize_scale_shift_backward,
    scale_shift,
)

if TYPE_CHECKING:
    from normlab.kernels.statistics import GroupStatistics


@dataclass(frozen=True)
class GroupNormCache:
    """What the backward pass needs. After a compiled forward, `x` and `compiled` (its float64
    statistics) are set, the backward runs compiled, and `xhat` (passed as None) is recomputed from x on
    first read."""

    xhat: np.ndarray = RecomputedWhenNone("_normalized_input")  # noqa: RUF009 (descriptor) (N, G, C // G, *S)
    rstd: np.ndarray  # (N, G, 1, 1...)
    gamma: np.ndarray  # (1, G, C // G, 1...)
    input_shape: tuple[int, ...]  # (N, C, *S)
    x: np.ndarray | None = None  # (N, C, *S): the input, kept by the compiled forward only
    compiled: GroupStatistics | None = None  # per (sample, group), from the compiled forward

    def _normalized_input(self) -> np.ndarray:
        from normlab.kernels.normalize import normalized_rows

        grouped = _grouped_shape(self.input_shape, self.gamma.shape[1])
        return normalized_rows(_rows_view(self.x, grouped), self.compiled).reshape(grouped)


def _rows_view(a: np.ndarray, grouped: tuple[int, ...]) -> np.ndarray:
    """(N, C, *S) -> (N * G, C // G * S): one row per (sample, group), the compiled kernels' layout."""
    return a.reshape(grouped[0] * grouped[1], -1)


def _grouped_shape(shape: tuple[int, ...], num_groups: int) -> tuple[int, ...]:
    n, c, *spatial = shape
    return (n, num_groups, c // num_groups, *spatial)


def _spatial_size(shape: tuple[int, ...]) -> int:
    """Elements per channel of one sample: H * W, or 1 for (N, C)."""
    return int(np.prod(shape[2:]))


def groupnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int, *, eps: float = 1e-5,
    backend: str = "auto",
) -> tuple[np.ndarray, GroupNormCache]:
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
    x = check_float_array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must be at least 2-D (N, C, ...), got {x.ndim}-D input of shape {x.shape}")
    check_positive("eps", eps)
    kernels = compiled_twin(backend, x)
    c = x.shape[1]
    if not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
    if c % num_groups:
        raise ValueError(f"num_groups must divide the number of channels C={c}, got num_groups={num_groups}")
    gamma = check_param("gamma", gamma, (c,), x.dtype)
    beta = check_param("beta", beta, (c,), x.dtype)
    grouped = _grouped_shape(x.shape, num_groups)  # (N, G, C // G, *S)
    param_shape = (1, num_groups, c // num_groups) + (1,) * (x.ndim - 2)
    stat_axes = tuple(range(2, len(grouped)))
    gamma_b = gamma.reshape(param_shape)
    if kernels is not None:
        gamma2, beta2 = gamma.reshape(num_groups, -1), beta.reshape(num_groups, -1)  # (G, C // G)
        out, stats = kernels.normalize_rows(_rows_view(x, grouped), gamma2, beta2, _spatial_size(x.shape), eps)
        if not compiled_statistics_in_range(kernels, stats, x.dtype, x.size // (grouped[0] * grouped[1])):
            kernels = None  # values near the dtype's largest: the NumPy core rescales them
    if kernels is None:
        xhat, _, _, rstd = normalize(x.reshape(grouped), stat_axes, eps)
        out = scale_shift(xhat, gamma_b, beta.reshape(param_shape))
        return out.reshape(x.shape), GroupNormCache(xhat, rstd, gamma_b, x.shape)
    rstd = stats.rstd.astype(x.dtype).reshape(grouped[:2] + (1,) * (len(grouped) - 2))  # (N, G, 1, 1...)
    cache = GroupNormCache(None, rstd, gamma_b, x.shape, x=x, compiled=stats)
    return out.reshape(x.shape), cache  # xhat (None) is recomputed from x when read


def groupnorm_backward(dout: np.ndarray, cache: GroupNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group normalization backward, closed form (the shared core over each group).

    Returns (dx, dgamma, dbeta): dx like x, dgamma and dbeta of shape (C,).
    """
    return _groupnorm_backward(dout, cache, "groupnorm_backward")


def _groupnorm_backward(
    dout: np.ndarray, cache: GroupNormCache, backward: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`groupnorm_backward`, its errors naming `backward` (the function the caller called)."""
    check_cache(backward, cache, GroupNormCache, "groupnorm_forward or instancenorm_forward")
    dout = check_same_shape("dout", dout, cache.input_shape)
    if cache.compiled is not None and dout.dtype == cache.x.dtype:
        from normlab.kernels.normalize import normalize_rows_backward

        grouped = _grouped_shape(cache.input_shape, cache.gamma.shape[1])
        gamma2 = cache.gamma.reshape(grouped[1], -1)  # (G, C // G)
        dx, dgamma, dbeta = normalize_rows_backward(
            _rows_view(dout, grouped), _rows_view(cache.x, grouped), cache.compiled, gamma2,
            _spatial_size(cache.input_shape),
        )
        return dx.reshape(dout.shape), dgamma.reshape(-1).astype(dout.dtype), dbeta.reshape(-1).astype(dout.dtype)
    xhat = cache.xhat
    stat_axes = tuple(range(2, xhat.ndim))
    param_axes = (0, *range(3, xhat.ndim))
    dx, dgamma, dbeta = normalize_scale_shift_backward(
        dout.reshape(xhat.shape), xhat, cache.rstd, cache.gamma, stat_axes, param_axes
    )
    return dx.reshape(cache.input_shape), dgamma.reshape(-1), dbeta.reshape(-1)


def instancenorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5, backend: str = "auto"
) -> tuple[np.ndarray, GroupNormCache]:
    """Instance normalization: each channel of each sample normalized over its spatial positions. The
    same as `groupnorm_forward` with num_groups = C. x: (N, C, *S) with at least one spatial axis."""
    x = check_float_array("x", x)
    if x.ndim < 3:
        raise ValueError(
            f"x must be at least 3-D (N, C, spatial...) for instance norm, got {x.ndim}-D input of shape {x.shape}"
        )
    if np.prod(x.shape[2:]) <= 1:
        raise ValueError(f"Expected more than 1 spatial element per channel for instance norm, got input size {x.shape}")
    return groupnorm_forward(x, gamma, beta, x.shape[1], eps=eps, backend=backend)


def instancenorm_backward(dout: np.ndarray, cache: GroupNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of `instancenorm_forward`: (dx, dgamma, dbeta)."""
    return _groupnorm_backward(dout, cache, "instancenorm_backward")
