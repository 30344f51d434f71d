"""The run status on synthetic curves: a collapse to chance is never "completed"."""

import math

import pytest

from normlab.experiments.status import failed, run_status

STEPS = list(range(0, 10_001, 100))


def test_a_curve_that_learns_and_stays_is_completed():
    acc = [min(0.85, 0.1 + 0.01 * i) for i in range(len(STEPS))]
    assert run_status(STEPS, acc, chance=0.1) == "completed"
    assert not failed("completed")


def test_a_collapse_to_chance_is_found_at_the_step_it_began():
    # The learning-rate baseline at lr 0.1: 0.83 until step 5700, then chance (0.10) to the end.
    acc = [0.83 if s < 5800 else 0.10 for s in STEPS]
    assert run_status(STEPS, acc, chance=0.1) == "collapsed at step 5800"
    assert failed("collapsed at step 5800")


def test_falling_below_half_the_best_is_a_collapse_even_above_twice_chance():
    acc = [0.1, 0.6, 0.8, 0.8, 0.35, 0.3]
    assert run_status([0, 1, 2, 3, 4, 5], acc, chance=0.1) == "collapsed at step 4"
    # A dip that recovers is not a collapse.
    assert run_status([0, 1, 2, 3], [0.1, 0.8, 0.15, 0.8], chance=0.1) == "completed"


def test_nan_loss_is_divergence_and_a_flat_curve_did_not_learn():
    assert run_status([0, 10], [0.1, 0.5], 0.1, losses=[2.3, 1.0, math.nan], loss_steps=[1, 2, 3]) == \
        "diverged at step 3"
    assert run_status([0, 10], [0.1, 0.5], 0.1, losses=[2.3, math.inf]) == "diverged at step 2"
    assert run_status([0, 10, 20], [0.1, 0.12, 0.11], chance=0.1) == "did not learn"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="steps and accuracies must have the same length, got 2 and 1"):
        run_status([0, 1], [0.5], 0.1)
    with pytest.raises(ValueError, match=r"chance must be in \(0, 1\), got 0"):
        run_status([0], [0.5], 0)
