"""Checks of scalar arguments (sizes, counts, rates, generators) shared by every layer of normlab: this
module imports only NumPy, so the functional core, nn, models, data, train and the command line all use
the same rules and the same words. Every message names the argument, what was expected and what was given.

The rules, one place for all of them:
- an integer is a Python int or a NumPy integer, never a bool (True is an int to Python, but never a size
  or a count here) and never a float, even 2.0 (a float where a count belongs is a mistake upstream);
- a number is an int, float or NumPy number, never a bool;
- a generator is a `numpy.random.Generator`, or None for a fresh, unseeded one.

Array checks (dtypes, shapes, caches) belong to the functional layer: `normlab.functional._checks`.
"""

from __future__ import annotations

import math

import numpy as np

_INTEGERS = (int, np.integer)
_NUMBERS = (int, float, np.integer, np.floating)


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: object, minimum: int, expected: str) -> int:
    # ValueError for a wrong type too: every caller reports a bad size the same way, whatever made it bad.
    if _is_bool(value) or not isinstance(value, _INTEGERS):
        raise ValueError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: object, what: str = "") -> int:
    """`value` must be an integer >= 1 (see the module's rules); returns it as a Python int.

    what: words that follow "a positive integer" in the message ("number of threads").
    Raises ValueError("NAME must be a positive integer[ WHAT], got VALUE").
    """
    return _check_int(name, value, 1, "a positive integer" + (f" {what}" if what else ""))


def check_non_negative_int(name: str, value: object, what: str = "") -> int:
    """`value` must be an integer >= 0 (a seed, a padding, a number of warm-up steps); returns a Python int."""
    return _check_int(name, value, 0, "a non-negative integer" + (f" {what}" if what else ""))


def check_positive(name: str, value: float) -> float:
    """A finite number > 0 (an eps of inf would silently turn every output into zeros)."""
    if _is_bool(value) or not isinstance(value, _NUMBERS):
        raise TypeError(f"{name} must be a number > 0, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_probability(name: str, value: float) -> float:
    """A number in [0, 1] (momentum, dropout probability)."""
    if _is_bool(value) or not isinstance(value, _NUMBERS):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def resolve_rng(rng: np.random.Generator | None, name: str = "rng") -> np.random.Generator:
    """The generator a layer or model draws from: `rng` itself, or a fresh unseeded one when it is None
    (as torch draws from its global generator when none is given). Pass a seeded one for a repeatable run.
    Raises TypeError for anything else (a seed, a RandomState): it would fail later, far from the cause."""
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        hint = " (for a seed s, pass numpy.random.default_rng(s))" if isinstance(rng, _INTEGERS) else ""
        raise TypeError(f"{name} must be a numpy.random.Generator or None, got {type(rng).__name__}{hint}")
    return rng
