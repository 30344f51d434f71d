"""Merging the moments of parts into the moments of the whole.

P parts (processes, batches) each hold a part of the data and its statistics: the count n_p, the mean m_p
and M2_p, the sum of squared deviations from m_p (n_p times the biased variance). The statistics of the whole
follow without revisiting the data (Chan, Golub & LeVeque, 1979, for two parts; the parallel axis theorem):

    n    = sum_p n_p
    mean = sum_p n_p m_p / n
    M2   = sum_p M2_p + sum_p n_p (m_p - mean)^2

Every term is a sum of non-negative numbers or a weighted mean, so nothing cancels: unlike adding up
sum(x) and sum(x^2) and forming E[x^2] - E[x]^2, this is exact to rounding for data far from zero and for
parts of very unequal sizes (including empty ones).

SyncBatchNorm merges the processes' parts of a batch with it; `normlab.nn.recompute_batchnorm_statistics` the
batches of a population (and, across processes, every process's). `moments` (a part's mean and biased
variance, as `normalize` computes them) is importable from here too.
"""

from __future__ import annotations

import numpy as np

from normlab.functional.normalize import moments  # noqa: F401 - the statistics of one part, beside their merge


def merge_moments(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The count, mean and M2 of the union of P parts, from each part's.

    Inputs:
    - counts: (P,) number of values in each part (0 allowed; the total must be positive).
    - means: (P, *S) each part's mean (any value for an empty part); S the shape of one statistic.
    - m2s: (P, *S) each part's sum of squared deviations from its own mean.

    Returns (n, mean, M2): n a float, mean and M2 of shape S, in float64. The biased variance is M2 / n.
    """
    counts = np.asarray(counts, dtype=np.float64)  # (P,)
    means, m2s = np.asarray(means, dtype=np.float64), np.asarray(m2s, dtype=np.float64)  # (P, *S)
    if counts.ndim != 1 or means.shape[:1] != counts.shape or m2s.shape != means.shape:
        raise ValueError(f"counts must be (P,) and means, m2s (P, ...) alike, got {counts.shape}, {means.shape}, "
                         f"{m2s.shape}")
    if np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"counts must be >= 0 with a positive total, got {counts.tolist()}")
    n = counts.sum()
    c = counts.reshape((-1,) + (1,) * (means.ndim - 1))  # (P, 1...)
    # An empty part's mean and M2 may be anything (even NaN); they must not reach the sums.
    means, m2s = np.where(c > 0, means, 0.0), np.where(c > 0, m2s, 0.0)  # (P, *S)
    mean = (c * means).sum(axis=0) / n  # S
    deviation = means - mean  # (P, *S)
    m2 = m2s.sum(axis=0) + (c * deviation * deviation).sum(axis=0)  # S
    return float(n), mean, m2
