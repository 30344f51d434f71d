"""Layer normalization (Ba, Kiros & Hinton, 2016): each sample normalized over its own features, so the
output never depends on the rest of the batch and training and evaluation compute the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from normlab.functional._checks import check_cache, check_float_array, check_param, check_positive, check_same_shape
from normlab.functional._recomputed import RecomputedWhenNone
from normlab.functional.normalize import (
    Axes,
    compiled_statistics_in_range,
    compiled_twin,
    normalize,
    normalize_scale_shift_backward,
    scale_shift,
)
from normlab.functional.staged import staged_backward

if TYPE_CHECKING:
    from normlab.kernels.statistics import GroupStatistics


@dataclass(frozen=True)
class LayerNormCache:
    """What the backward pass needs. After a compiled forward, `compiled` holds its float64 statistics,
    the backward runs compiled, and `xhat` (passed as None) is recomputed from x on first read."""

    x: np.ndarray  # (N, *F): the input, for the staged backward
    xhat: np.ndarray = RecomputedWhenNone("_normalized_input")  # noqa: RUF009 (a descriptor) (N, *F)
    rstd: np.ndarray  # (N, 1, ...)
    gamma: np.ndarray  # broadcast shape: (1, *F) elementwise, or (1, C, 1, 1) per channel
    eps: float
    stat_axes: Axes  # (1, ..., ndim - 1): every feature axis
    param_axes: Axes  # the axes gamma is shared over: (0,) or (0, 2, 3)
    param_shape: tuple[int, ...]  # gamma's own shape, for the returned gradients
    compiled: GroupStatistics | None = None  # per sample, from the compiled forward

    def _normalized_input(self) -> np.ndarray:
        from normlab.kernels.normalize import normalized_rows

        return normalized_rows(_rows_view(self.x), self.compiled).reshape(self.x.shape)



def _rows_view(a: np.ndarray) -> np.ndarray:
    """(N, *F) -> (N, prod(F)): one row per normalization group, the compiled kernels' layout."""
    return a.reshape(a.shape[0], -1)


def _channel_size(shape: tuple[int, ...], param_axes: Axes) -> int:
    """Elements of a row that share one gamma: 1 for the elementwise affine, the size of the axes after
    the channel axis (H * W) for the per-channel one."""
    return 1 if param_axes == (0,) else int(np.prod(shape[2:]))


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5, backend: str = "auto"
) -> tuple[np.ndarray, LayerNormCache]:
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
    x = check_float_array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must be at least 2-D (N, features...), got {x.ndim}-D input of shape {x.shape}")
    check_positive("eps", eps)
    kernels = compiled_twin(backend, x)
    features = x.shape[1:]
    per_channel = isinstance(gamma, np.ndarray) and gamma.shape == (x.shape[1],) and x.ndim > 2
    param_shape = (x.shape[1],) if per_channel else features
    gamma = check_param("gamma", gamma, param_shape, x.dtype)
    beta = check_param("beta", beta, param_shape, x.dtype)
    if per_channel:
        broadcast_shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        param_axes = (0, *range(2, x.ndim))
    else:
        broadcast_shape = (1, *features)
        param_axes = (0,)
    gamma_b, beta_b = gamma.reshape(broadcast_shape), beta.reshape(broadcast_shape)
    stat_axes = tuple(range(1, x.ndim))
    if kernels is not None:
        channel_size = _channel_size(x.shape, param_axes)
        out, stats = kernels.normalize_rows(_rows_view(x), gamma.reshape(1, -1), beta.reshape(1, -1), channel_size, eps)
        if not compiled_statistics_in_range(kernels, stats, x.dtype, x.size // x.shape[0]):
            kernels = None  # values near the dtype's largest: the NumPy core rescales them
    if kernels is None:
        xhat, _, _, rstd = normalize(x, stat_axes, eps)
        out = scale_shift(xhat, gamma_b, beta_b)
        return out, LayerNormCache(x, xhat, rstd, gamma_b, eps, stat_axes, param_axes, param_shape)
    rstd = stats.rstd.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))  # (N, 1, ...)
    cache = LayerNormCache(x, None, rstd, gamma_b, eps, stat_axes, param_axes, param_shape, compiled=stats)
    return out.reshape(x.shape), cache  # xhat (None) is recomputed from x when read


def layernorm_backward(dout: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer normalization backward, closed form: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with
    g = dout * gamma and the means over each sample's features.

    Returns (dx, dgamma, dbeta), dgamma and dbeta shaped like gamma.
    """
    check_cache("layernorm_backward", cache, LayerNormCache, "layernorm_forward")
    dout = check_same_shape("dout", dout, cache.x.shape)
    if cache.compiled is not None and dout.dtype == cache.x.dtype:
        from normlab.kernels.normalize import normalize_rows_backward

        dx, dgamma, dbeta = normalize_rows_backward(
            _rows_view(dout), _rows_view(cache.x), cache.compiled, cache.gamma.reshape(1, -1),
            _channel_size(cache.x.shape, cache.param_axes),
        )
        return dx.reshape(dout.shape), *(g.astype(dout.dtype).reshape(cache.param_shape) for g in (dgamma, dbeta))
    dx, dgamma, dbeta = normalize_scale_shift_backward(
        dout, cache.xhat, cache.rstd, cache.gamma, cache.stat_axes, cache.param_axes
    )
    return dx, dgamma.reshape(cache.param_shape), dbeta.reshape(cache.param_shape)


def layernorm_backward_staged(dout: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer normalization backward on the same staged graph as batch norm's (see
    `normlab.functional.staged`), with the statistics over each sample's features instead of the batch.

    Returns (dx, dgamma, dbeta), equal to `layernorm_backward`'s.
    """
    check_cache("layernorm_backward_staged", cache, LayerNormCache, "layernorm_forward")
    dout = check_same_shape("dout", dout, cache.x.shape)
    dx, dgamma, dbeta = staged_backward(
        dout, cache.x, cache.gamma, cache.eps, cache.stat_axes, cache.param_axes
    )
    return dx, dgamma.reshape(cache.param_shape), dbeta.reshape(cache.param_shape)
