"""The elementwise steps every layout shares, each written once:

    centred = (x - p) - shift                    x - mean, the mean kept as pivot p + shift
    xhat    = centred * rstd
    out     = gamma * xhat + beta
    dx      = rstd * (g - mean(g) - xhat * mean(g * xhat)),   g = gamma * dout

in float64 whatever x's dtype, and their "working" forms in x's own precision for rows with one gamma per
element (`working_centre`). The helpers are inlined into the kernels that call them (`common.INLINE`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from normlab.kernels.normalize.common import INLINE, JIT


@njit(**INLINE)
def centred(x, p, shift):
    """x - mean in float64, for a mean kept as p + shift (p in float64): exact for x near p (Sterbenz)."""
    return (np.float64(x) - p) - shift


@njit(**INLINE)
def affine(x, p, shift, rstd, gamma, beta):
    """gamma * xhat + beta of one element."""
    return gamma * (centred(x, p, shift) * rstd) + beta


@njit(**INLINE)
def input_grad(dout, x, p, shift, rstd, gamma, mean_g, mean_gxhat):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) of one element, g = gamma * dout."""
    return rstd * (gamma * np.float64(dout) - mean_g - centred(x, p, shift) * rstd * mean_gxhat)


@njit(**JIT)
def normalize_segment(x, p, shift, rstd, gamma, beta, out):
    """out = gamma * xhat + beta over a segment of one group and one gamma."""
    for i in range(x.shape[0]):
        out[i] = affine(x[i], p, shift, rstd, gamma, beta)


@njit(**JIT)
def input_grad_segment(dout, x, p, shift, rstd, gamma, mean_g, mean_gxhat, dx):
    """dx over a segment of one group and one gamma."""
    for i in range(x.shape[0]):
        dx[i] = input_grad(dout[i], x[i], p, shift, rstd, gamma, mean_g, mean_gxhat)


@njit(**JIT)
def working_centre(x, p, shift, rstd):
    """(c, rstd, shift) in x's dtype for xhat = (x - c) * rstd + shift, formed in that precision, of a row
    whose mean is p + shift (its statistics' pivot and shift).

    c is the mean rounded to x's dtype; the returned shift = -(mean - c) * rstd carries the part of the mean
    below c's last digit (for float64 the rounding error of p + shift itself, from Knuth's two-sum). x - c
    is exact for x within a factor of two of c (Sterbenz) and otherwise within an ulp of itself, so xhat
    stays within a few ulps (of x's precision) of the exact value however far the mean is from zero. In
    float32 the loops then run at twice float64's vector width, with no conversions."""
    mean = p + shift
    tail = p - (mean - (mean - p)) + (shift - (mean - p))  # p + shift - mean, exactly
    c = x.dtype.type(mean)
    below = (mean - np.float64(c)) + tail  # mean - c: exact (Sterbenz) plus the tail
    return c, x.dtype.type(rstd), x.dtype.type(-below * rstd)


@njit(**INLINE)
def working_xhat(x, c, rstd, shift):
    """xhat of one element in x's precision, from `working_centre`'s (c, rstd, shift)."""
    return (x - c) * rstd + shift


@njit(**INLINE)
def working_affine(x, c, rstd, shift, gamma, beta):
    """gamma * xhat + beta of one element in x's precision."""
    return gamma * working_xhat(x, c, rstd, shift) + beta
