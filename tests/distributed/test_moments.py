"""merge_moments: the count, mean and M2 of a batch from those of its parts, exact to rounding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.distributed import merge_moments


def part_moments(parts):
    counts = np.array([len(p) for p in parts])
    means = np.array([p.mean(axis=0) if len(p) else np.full(p.shape[1:], np.nan) for p in parts])
    m2s = np.array([((p - p.mean(axis=0)) ** 2).sum(axis=0) if len(p) else np.full(p.shape[1:], np.nan)
                    for p in parts])
    return counts, means, m2s


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=5).filter(lambda s: sum(s) > 0),
       seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 1e4]))
def test_merged_moments_equal_the_moments_of_the_whole(sizes, seed, offset):
    rng = np.random.default_rng(seed)
    whole = rng.standard_normal((sum(sizes), 3)) + offset
    parts = np.split(whole, np.cumsum(sizes)[:-1])
    n, mean, m2 = merge_moments(*part_moments(parts))  # empty parts carry NaN statistics: ignored
    assert n == sum(sizes)
    # A mean near zero is a sum that cancels: its error is relative to the data's scale, not to itself.
    scale = np.abs(whole).max(axis=0)
    np.testing.assert_allclose(mean, whole.mean(axis=0), rtol=1e-14, atol=1e-14 * scale.max())
    np.testing.assert_allclose(m2 / n, whole.var(axis=0), rtol=1e-10, atol=1e-14)


def test_merging_stays_accurate_where_summing_squares_cancels(rng):
    # Mean 1e8, standard deviation 1: E[x^2] - E[x]^2 loses every digit in float64, while merging keeps
    # the error of the data's own rounding (1e8 * eps relative).
    parts = [rng.standard_normal((n, 1)) + 1e8 for n in (3, 5)]
    whole = np.concatenate(parts)
    n, _, m2 = merge_moments(*part_moments(parts))
    naive = (whole**2).mean() - whole.mean() ** 2
    exact = whole.var()
    assert abs(m2[0] / n - exact) < 1e-7 * exact
    assert abs(naive - exact) > 1e-2 * exact  # the alternative this avoids really fails here


def test_bad_counts_are_errors_naming_them():
    with pytest.raises(ValueError, match="counts must be >= 0 with a positive total"):
        merge_moments(np.array([0, 0]), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="counts must be >= 0"):
        merge_moments(np.array([-1, 3]), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"counts must be \(P,\)"):
        merge_moments(np.array([1, 3]), np.zeros((3, 3)), np.zeros((3, 3)))
