"""Input validation shared by the functional layers: arrays, parameters and caches (the scalar checks,
sizes and rates, are `normlab.checks`'s, used by every layer). Every message names the argument, what was
expected and what was given."""

from __future__ import annotations

import numpy as np

from normlab.checks import (  # noqa: F401  (the scalar checks, for the functional layers)
    check_non_negative_int,
    check_positive,
    check_positive_int,
    check_probability,
)


def is_float_dtype(dtype: np.dtype) -> bool:
    """A NumPy floating type, or ml_dtypes' bfloat16 (which NumPy files under void)."""
    return dtype.kind == "f" or dtype.name == "bfloat16"  # attributes: cheaper than np.issubdtype, on every call


def check_float_array(name: str, x: object, ndims: tuple[int, ...] | None = None, *, min_ndim: int = 0,
                      layout: str = "") -> np.ndarray:
    """`x` must be a floating-point NumPy array (with one of `ndims` dimensions, if given; with at least
    `min_ndim`, the axes named by `layout` such as "(N, C, ...)", in the message)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if not is_float_dtype(x.dtype):
        raise TypeError(f"{name} must have a floating-point dtype (float32 or float64), got {x.dtype}")
    if ndims is not None and x.ndim not in ndims:
        expected = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {expected}, got {x.ndim}-D input of shape {x.shape}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must be at least {min_ndim}-D {layout}, got {x.ndim}-D input of shape {x.shape}")
    return x


def check_param(name: str, p: object, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A parameter (gamma, beta, running statistic) of exactly `shape`, returned in `dtype`."""
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of shape {shape}, got {type(p).__name__}")
    if p.shape != shape:
        raise ValueError(f"{name} must have shape {shape} to match the input, got shape {p.shape}")
    if not is_float_dtype(p.dtype):
        raise TypeError(f"{name} must have a floating-point dtype, got {p.dtype}")
    return p.astype(dtype, copy=False)


def check_same_shape(name: str, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (the forward output's), got {a.shape}")
    return a


def check_cache(backward: str, cache: object, expected: type, *forwards: str) -> None:
    """`cache` must come from one of `forwards`: a cache of another operation can have matching sizes and
    give a wrong gradient without any error, so every backward checks where its cache came from.

    Caches that several forwards share (every normalization's `NormCache`, pooling's `PoolCache`) carry a
    `forward` field naming the one that made it.
    """
    made_by = getattr(cache, "forward", None)
    if isinstance(cache, expected) and (made_by is None or made_by in forwards):
        return
    origin = f"{type(cache).__name__}" + (f" made by {made_by}" if made_by else "")
    raise TypeError(f"{backward}: cache must be the cache returned by {' or '.join(forwards)}, got a {origin}")
