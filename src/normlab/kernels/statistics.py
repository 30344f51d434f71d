"""The statistics the compiled forward hands to its backward (kept in the functional caches)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class GroupStatistics(NamedTuple):
    """Per normalization group, as the compiled kernels keep it: float64, except the pivot.

    The mean is stored as pivot + shift, the pivot being the group's first element (the same pivot as
    `normlab.functional.normalize`), so x - mean = (x - pivot) - shift stays exact for data far from zero.
    """

    pivot: np.ndarray  # (groups,) x's dtype: the first element of every group
    shift: np.ndarray  # (groups,) mean - pivot
    var: np.ndarray  # (groups,) biased variance
    rstd: np.ndarray  # (groups,) 1 / sqrt(var + eps)

    @property
    def mean(self) -> np.ndarray:
        return self.pivot + self.shift  # (groups,) float64
