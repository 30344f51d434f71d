"""Intervals and the verdict rule against known cases."""

import math

import pytest

from normlab.experiments.stats import (
    Interval,
    format_difference,
    format_interval,
    log_ratio,
    mean_interval,
    paired_difference,
    verdict,
)


def test_mean_interval_is_students_t_interval():
    # mean 3, sample std sqrt(2.5), sem sqrt(2.5 / 5) = 0.70711; t(0.975, 4) = 2.776445
    iv = mean_interval([1, 2, 3, 4, 5])
    assert iv.mean == 3 and iv.n == 5
    assert math.isclose(iv.high - 3, 2.776445 * math.sqrt(0.5), rel_tol=1e-6)
    assert math.isclose(3 - iv.low, iv.high - 3, rel_tol=1e-12)


def test_mean_interval_of_equal_values_is_a_point_and_missing_values_stay_missing():
    assert mean_interval([0.5, 0.5, 0.5]) == Interval(0.5, 0.5, 0.5, 3)
    one = mean_interval([0.7])
    assert one.mean == 0.7 and not one.defined
    for bad in ([0.1, None, 0.3], [0.1, math.nan]):
        iv = mean_interval(bad)
        assert math.isnan(iv.mean) and not iv.defined and iv.n == len(bad)
    with pytest.raises(ValueError, match="values must not be empty"):
        mean_interval([])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.5"):
        mean_interval([1, 2], confidence=1.5)


def test_paired_difference_pairs_seed_by_seed():
    # The arms differ a lot between seeds but by exactly +1 within each seed: the paired interval is a point.
    iv = paired_difference([11, 21, 31], [10, 20, 30])
    assert iv == Interval(1.0, 1.0, 1.0, 3)
    assert paired_difference([1, None], [0, 0]).defined is False
    with pytest.raises(ValueError, match="as many values on each side, got 2 and 3"):
        paired_difference([1, 2], [1, 2, 3])


def test_verdict_holds_only_when_the_interval_excludes_zero_on_the_predicted_side():
    assert verdict(Interval(0.5, 0.1, 0.9, 5)) == "holds"
    assert verdict(Interval(-0.5, -0.9, -0.1, 5)) == "does not hold"
    assert verdict(Interval(-0.5, -0.9, -0.1, 5), predicted="negative") == "holds"
    # Zero inside the interval: inconclusive, with the interval.
    assert verdict(Interval(0.2, -0.1, 0.5, 5), spec="+.1f", scale=100) == "inconclusive (CI [-10.0, +50.0])"
    assert verdict(Interval(0.3, -0.3, 0.9, 5), show=log_ratio) == "inconclusive (CI [0.5x, 7.9x])"
    assert verdict(mean_interval([0.2])).startswith("inconclusive (no interval: n = 1")
    with pytest.raises(ValueError, match="predicted must be 'positive' or 'negative', got 'up'"):
        verdict(Interval(1, 0, 2, 3), predicted="up")


def test_a_known_difference_with_zero_inside_is_inconclusive():
    # differences +2, -1, +1, 0, +3: mean 1, t-interval [-0.96, +2.96]
    iv = paired_difference([12, 9, 11, 10, 13], [10, 10, 10, 10, 10])
    assert iv.low < 0 < iv.high
    assert verdict(iv, spec="+.2f") == "inconclusive (CI [-0.96, +2.96])"


def test_formatting_shows_mean_half_width_and_n():
    assert format_interval(Interval(0.371, 0.347, 0.395, 5), scale=100, unit=" %") == "37.1 ± 2.4 % (n=5)"
    assert format_interval(Interval(math.nan, math.nan, math.nan, 5)) == "— (n=5)"
    assert format_difference(Interval(0.23, 0.201, 0.259, 5), scale=100, unit=" points") == "+23.0 [+20.1, +25.9] points"
