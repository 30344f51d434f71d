"""Intervals and the verdict rule against known cases."""

import math

import numpy as np
import pytest

from normlab.experiments.stats import (
    Interval,
    comparison,
    error_bars,
    format_difference,
    format_interval,
    format_ratio,
    log_ratio,
    mean_band,
    mean_interval,
    paired_difference,
    paired_values,
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


def test_comparison_is_the_paired_difference_with_its_t_interval_and_verdict():
    from scipy import stats as scipy_stats

    # differences +2, -1, +1, 0, +3: mean 1, sample std sqrt(2.5), t(0.975, 4) * sqrt(2.5 / 5) = 1.96312
    a, b = [12, 9, 11, 10, 13], [10, 10, 10, 10, 10]
    c = comparison(a, b, spec="+.2f")
    half = scipy_stats.t.ppf(0.975, 4) * math.sqrt(2.5 / 5)
    assert math.isclose(half, 1.963243, rel_tol=1e-6)
    assert c.difference.mean == 1.0 and c.difference.n == 5
    assert math.isclose(c.difference.low, 1 - half, rel_tol=1e-12) and math.isclose(c.difference.high, 1 + half)
    assert c.predicted == "positive" and c.verdict == "inconclusive (CI [-0.96, +2.96])"
    # Every seed's difference between +3 and +5: the interval excludes zero on the predicted side.
    assert comparison([13, 14, 15], [10, 10, 10]).verdict == "holds"
    assert comparison([13, 14, 15], [10, 10, 10], predicted="negative").verdict == "does not hold"
    record = comparison([0.5, 0.6, 0.7], [0.5, 0.5, 0.5], scale=100, spec="+.1f").to_dict()
    assert set(record) == {"difference", "predicted", "verdict"} and record["difference"]["n"] == 3
    assert math.isclose(record["difference"]["mean"], 0.1) and record["verdict"] == "inconclusive (CI [-14.8, +34.8])"
    assert set(comparison([1, 2], [0, 0]).to_dict(predicted=False)) == {"difference", "verdict"}


def test_paired_values_keep_missing_seeds_missing():
    assert paired_values([3.0, None, 5.0], [1.0, 2.0, None]) == [2.0, None, None]
    with pytest.raises(ValueError, match="as many values on each side, got 1 and 2"):
        paired_values([1], [1, 2])


def test_format_ratio_shows_a_log_ratio_as_a_geometric_mean_ratio():
    assert format_ratio(Interval(0.5, 0.25, 0.75, 5)) == "3.2x [1.8x, 5.6x]"
    assert format_ratio(Interval(0.5, 0.25, 0.75, 5), ".2f") == "3.16x [1.78x, 5.62x]"
    assert format_ratio(Interval(0.0, math.nan, math.nan, 1)) == "1x"
    assert format_ratio(Interval(math.nan, math.nan, math.nan, 5)) == "—"


def test_error_bars_draw_each_mean_with_its_interval():
    from normlab.experiments.base import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ivs = [Interval(0.30, 0.25, 0.35, 5), Interval(0.40, math.nan, math.nan, 1), Interval(math.nan, math.nan,
                                                                                             math.nan, 5)]
    bars = error_bars(ax, [2, 4, 8], ivs, scale=100, fmt="o-")
    line = bars.lines[0]
    np.testing.assert_allclose(line.get_ydata(), [30.0, 40.0, np.nan])
    (segments,) = bars.lines[2]  # one vertical segment per point: from mean - below to mean + above
    first, second, missing = segments.get_segments()
    np.testing.assert_allclose(first, [[2, 25.0], [2, 35.0]])
    np.testing.assert_allclose(second, [[4, 40.0], [4, 40.0]])  # an undefined interval: the mean, no bar
    assert missing.size == 0  # a missing mean: nothing drawn
    # A log10 ratio drawn as a ratio: the bar runs from 10^low to 10^high.
    ratio = error_bars(ax, [1], [Interval(0.5, 0.25, 0.75, 5)], transform=lambda v: 10 ** v, fmt="s")
    np.testing.assert_allclose(ratio.lines[2][0].get_segments()[0][:, 1], [10 ** 0.25, 10 ** 0.75])
    mean_band(ax, [1, 2], [Interval(0.5, 0.4, 0.6, 5), Interval(0.7, 0.6, 0.8, 5)], scale=100, color="tab:red")
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), [50.0, 70.0])
    band = ax.collections[-1].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(40.0) and band.max() == pytest.approx(80.0)
    plt.close(fig)
