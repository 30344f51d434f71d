"""learning-rate's "steps to": the untrained network's evaluation at step 0 is not averaged in."""

from normlab.experiments.learning_rate import smooth_trained, steps_to_levels


def test_step_zero_is_kept_out_of_the_smoothing():
    steps = [0, 100, 200, 300, 400]
    acc = [0.1, 0.82, 0.85, 0.87, 0.87]
    smooth = smooth_trained(steps, acc, 3)
    assert smooth[0] is None and smooth[1] == 0.82 and abs(smooth[2] - 0.835) < 1e-12
    assert abs(smooth[3] - (0.82 + 0.85 + 0.87) / 3) < 1e-12
    # With step 0 in the window the first step at 0.80 would have been 300 (mean of 0.1, 0.82, 0.85 < 0.80).
    assert steps_to_levels(steps, acc) == {"0.8": 100, "0.84": 300, "0.86": 400}


def test_a_diverged_curve_never_reaches_a_level():
    assert steps_to_levels([0, 100, 200], [0.1, None, None]) == {"0.8": None, "0.84": None, "0.86": None}
