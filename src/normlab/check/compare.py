"""Comparing one output of the learner's function with the expected one: strict shapes, the relative
error against a threshold, and what a wrong value looks like (a multiple of the right one, transposed,
not summed, a dimension kept)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from normlab.gradcheck import relative_error

THRESHOLD = 1e-7  # relative error that passes in float64 (CS231n's "1e-8 or less" in its elementwise measure)
MATCH = 1e-6  # a wrong output equals a known mistake's output within this


@dataclass
class OutputCheck:
    """One output of one call: pass or fail, why, and what the mistake looks like."""

    name: str  # "out", "dx", "dgamma", "dbeta", "running_mean", "running_var"
    passed: bool
    error: float | None  # relative error ||got - expected|| / (||got|| + ||expected||); None: not comparable
    threshold: float
    expected_shape: tuple[int, ...]
    shape: tuple[int, ...] | None  # None when the output is not an array
    diagnoses: list[str] = field(default_factory=list)  # plain words, most specific first
    mistakes: list[str] = field(default_factory=list)  # keys of the catalogue's matching mistakes


def same_values(got: np.ndarray, expected: np.ndarray) -> float | None:
    """Relative error of got against expected when they hold the same number of values (compared in order,
    whatever the shapes), else None."""
    if got.size != expected.size:
        return None
    with np.errstate(all="ignore"):
        return relative_error(got.reshape(expected.shape), expected)


def compare_output(name: str, got, expected: np.ndarray, threshold: float = THRESHOLD,
                   summed_axes: tuple[int, ...] | None = None, group: int = 0) -> OutputCheck:
    """Compare an output with its expected value.

    Inputs:
    - got: the learner's output (an array, or a string saying what was returned instead).
    - expected: the reference, float64.
    - summed_axes: for a parameter gradient, the axes of x its value sums over (to recognise a gradient
      left unsummed).
    - group: M, the number of values each statistic averages (to name a ratio of 1/M).
    """
    if isinstance(got, str):
        return OutputCheck(name, False, None, threshold, expected.shape, None,
                           [f"{name} is {got}, expected an array of shape {expected.shape}"])
    error = same_values(got, expected)
    check = OutputCheck(name, False, error, threshold, expected.shape, got.shape)
    if got.shape != expected.shape:
        check.diagnoses.append(_shape_words(name, got, expected, error, threshold, summed_axes))
        return check
    if not np.all(np.isfinite(got)):
        check.diagnoses.append(f"{name} contains NaN or infinity (a division by zero? a square root of a negative "
                               "number?)")
        return check
    check.passed = error is not None and error <= threshold
    if not check.passed:
        check.diagnoses.extend(pattern_words(name, got, expected, group))
    if got.dtype != expected.dtype:
        check.diagnoses.append(f"{name} has dtype {got.dtype} for float64 inputs")
    return check


def _shape_words(name, got, expected, error, threshold, summed_axes) -> str:
    text = f"{name} has shape {got.shape} where {expected.shape} is expected"
    if error is not None and error <= threshold:
        return text + " (the values are right: a kept dimension, keepdims=True or an unflattened (1, D)?)"
    if summed_axes is not None and got.size > expected.size:
        try:
            summed = got.sum(axis=summed_axes)
        except (ValueError, np.exceptions.AxisError):
            summed = None
        if summed is not None and summed.size == expected.size and relative_error(
                summed.reshape(expected.shape), expected) <= MATCH:
            return text + (f": it is not summed over axes {summed_axes}; the parameter was broadcast over them in "
                           "the forward pass, so its gradient sums over them")
    return text


def pattern_words(name: str, got: np.ndarray, expected: np.ndarray, group: int) -> list[str]:
    """What a wrong value of the right shape is, when it is something simple: a multiple, a transpose, zero."""
    if not np.any(got):
        return [f"{name} is all zeros"]
    scale = float(np.vdot(got, expected) / max(np.vdot(expected, expected), np.finfo(float).tiny))
    if scale != 0 and abs(scale - 1) > MATCH and relative_error(got, scale * expected) <= MATCH:
        return [_ratio_words(name, scale, group)]
    if got.ndim == 2 and got.shape[0] == got.shape[1] and relative_error(got, expected.T) <= MATCH:
        return [f"{name} is the transpose of the expected value (an axis mix-up that a square shape hides)"]
    return []


def _ratio_words(name: str, scale: float, group: int) -> str:
    if abs(scale + 1) <= MATCH:
        return f"{name} has the opposite sign"
    if group > 1 and abs(scale * group - 1) <= MATCH:
        return f"{name} is 1/{group} of the expected value: a mean where a sum is needed"
    if group > 1 and abs(scale / group - 1) <= MATCH:
        return f"{name} is {group} times the expected value: a sum where a mean is needed"
    fraction = Fraction(scale).limit_denominator(64)
    if abs(float(fraction) - scale) <= MATCH * abs(scale):
        return f"{name} is {fraction} times the expected value"
    return f"{name} is {scale:.6g} times the expected value"
