"""A run's status from its accuracy curve and its losses: a run that fails is never "completed".

    diverged at step S    the loss became NaN or infinite at step S
    did not learn         the accuracy never rose above twice chance
    collapsed at step S   it learned, but its final accuracy is below twice chance or below half its own
                          best; S is the first recorded step from which it stayed below that level
    completed             otherwise

NaN detection alone misses a collapse: a network whose accuracy falls to chance and stays there still
has a finite loss (e.g. ln 10 on ten classes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

COMPLETED = "completed"


def run_status(steps: Sequence[int], accuracies: Sequence[float | None], chance: float,
               losses: Sequence[float] | None = None, loss_steps: Sequence[int] | None = None) -> str:
    """The status of one run (see the module docstring).

    Inputs:
    - steps, accuracies: the accuracy recorded at each step (T,), in order; None where not measured.
    - chance: the accuracy of guessing (1 / number of classes).
    - losses: the training loss per step, optional; loss_steps their steps (default 1, 2, ...).
    Returns: "completed", "diverged at step S", "did not learn" or "collapsed at step S".
    """
    if len(steps) != len(accuracies):
        raise ValueError(f"steps and accuracies must have the same length, got {len(steps)} and {len(accuracies)}")
    if not 0 < chance < 1:
        raise ValueError(f"chance must be in (0, 1), got {chance!r}")
    if losses is not None:
        at = loss_steps if loss_steps is not None else range(1, len(losses) + 1)
        for step, loss in zip(at, losses):
            if loss is None or not math.isfinite(loss):
                return f"diverged at step {step}"
    points = [(s, a) for s, a in zip(steps, accuracies) if a is not None]
    if any(not math.isfinite(a) for _, a in points):
        step = next(s for s, a in points if not math.isfinite(a))
        return f"diverged at step {step}"
    if not points:
        return COMPLETED
    best = max(a for _, a in points)
    if best <= 2 * chance:
        return "did not learn"
    level = max(2 * chance, best / 2)
    final = points[-1][1]
    if final >= level:
        return COMPLETED
    first_below = len(points) - 1
    while first_below > 0 and points[first_below - 1][1] < level:
        first_below -= 1
    return f"collapsed at step {points[first_below][0]}"


def failed(status: str) -> bool:
    """True for every status but "completed"."""
    return status != COMPLETED


def failures(runs: Iterable[dict]) -> str:
    """The distinct statuses of the failed runs among `runs` (dicts with "status"), or "all completed"."""
    return ", ".join(sorted({r["status"] for r in runs if failed(r["status"])})) or "all completed"
