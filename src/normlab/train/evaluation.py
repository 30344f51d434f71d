"""A trained model on a labelled set: accuracy, accuracy per class and the confusion matrix
(`normlab evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts (K, K) int64: counts[i, j] = examples of true class i predicted as class j.

    Inputs: y_true, y_pred (N,) integers in [0, num_classes).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be (N,) of the same length, got {y_true.shape} and {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    confusion: np.ndarray  # (K, K) counts, rows true classes, columns predictions

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.confusion.sum())

    @property
    def support(self) -> np.ndarray:
        """(K,) examples of each true class."""
        return self.confusion.sum(axis=1)

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """(K,) the fraction of each class's examples predicted correctly (recall); NaN for an absent class."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / self.support

    def table(self) -> str:
        """Per-class accuracy, one line per class, then the overall accuracy."""
        width = max(len("class"), *map(len, self.classes))
        lines = [f"{'class'.ljust(width)}  examples  correct  accuracy"]
        for name, n, hit, acc in zip(self.classes, self.support, np.diag(self.confusion), self.per_class_accuracy):
            lines.append(f"{name.ljust(width)}  {n:8d}  {hit:7d}  {'-' if n == 0 else f'{acc:.4f}':>8}")
        lines.append(f"{'all'.ljust(width)}  {self.confusion.sum():8d}  {np.trace(self.confusion):7d}  "
                     f"{self.accuracy:8.4f}")
        return "\n".join(lines)


def evaluate_predictions(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> Evaluation:
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty set")
    return Evaluation(tuple(classes), confusion_matrix(y_true, y_pred, len(classes)))
