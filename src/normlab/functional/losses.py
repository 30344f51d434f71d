"""Softmax cross-entropy, computed from logits in a numerically stable way."""

from __future__ import annotations

import numpy as np

from normlab.functional._checks import check_float_array


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    Inputs:
    - logits: (N, K) float scores.
    - labels: (N,) integers in [0, K).

    Returns (loss, dlogits): loss a Python float, dlogits (N, K) = (softmax(logits) - onehot) / N.
    Subtracting each row's maximum before exponentiating keeps exp from overflowing; log-softmax is
    shifted - log(sum(exp(shifted))), never log of a probability that underflowed to 0.
    """
    logits = check_float_array("logits", logits, ndims=(2,))
    labels = np.asarray(labels)
    n, k = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match logits {logits.shape}, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got values in [{labels.min()}, {labels.max()}]")
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), row max is 0
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, 1)
    log_probs = shifted - log_norm  # (N, K)
    rows = np.arange(n)
    loss = -log_probs[rows, labels].mean()
    dlogits = np.exp(log_probs)  # softmax
    dlogits[rows, labels] -= 1
    dlogits /= n
    return float(loss), dlogits
