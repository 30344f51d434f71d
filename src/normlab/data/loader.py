"""Minibatches: each epoch visits every example exactly once, in a fresh random order."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from normlab.checks import check_positive_int


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def batch_indices(order: np.ndarray, batch_size: int, drop_last: bool = False) -> Iterator[np.ndarray]:
    """Consecutive slices of `order` (a permutation, or arange for evaluation) of `batch_size` indices; the
    last one shorter unless `drop_last`."""
    check_positive_int("batch_size", batch_size)
    for b in range(num_batches(len(order), batch_size, drop_last)):
        yield order[b * batch_size:(b + 1) * batch_size]


def epoch_order(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n): sampling without replacement within an epoch."""
    return rng.permutation(n)
