"""The loss landscape along the gradient, as Santurkar et al. (2018) measure it (Fig. 4): from the weights w
with gradient g = grad L(w), step to w - eta * g for several step sizes eta and record

    loss variation            the loss L(w - eta g) at each eta (its range over the etas is Fig. 4a's band)
    gradient predictiveness   ||grad L(w - eta g) - grad L(w)||, l2 (Fig. 4b): how far the gradient we would
                              follow has moved from the one we computed
    effective beta-smoothness the largest ||grad L(w - eta g) - grad L(w)|| / ||eta g|| over the etas (Fig. 4c):
                              a Lipschitz constant of the gradient along the step actually taken

`direction_measures` works on any function of a flat vector; `model_objective` makes one of a model's
training loss on a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from normlab.functional import softmax_cross_entropy
from normlab.nn import Module, input_grad_skipped

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]  # w (P,) -> (loss, gradient (P,))


@dataclass(frozen=True)
class DirectionMeasures:
    """What `direction_measures` returns; arrays have one entry per step size (S,).

    - step_sizes: the etas.
    - loss: L(w) at the start; losses: L(w - eta g).
    - gradient_norm: ||g||; distances: ||eta g||.
    - gradient_changes: ||grad L(w - eta g) - g||.
    - smoothness: gradient_changes / distances (the gradient's Lipschitz ratio along each step).
    """

    step_sizes: np.ndarray
    loss: float
    losses: np.ndarray
    gradient_norm: float
    distances: np.ndarray
    gradient_changes: np.ndarray
    smoothness: np.ndarray

    @property
    def effective_beta(self) -> float:
        """The largest gradient change per distance over the steps (Fig. 4c)."""
        return float(self.smoothness.max())

    def summary(self) -> dict[str, float]:
        """The band at this point of training: the range of the loss and of the gradient change over the
        step sizes, and the effective beta."""
        return {"loss": self.loss, "loss_min": float(self.losses.min()), "loss_max": float(self.losses.max()),
                "gradient_change_min": float(self.gradient_changes.min()),
                "gradient_change_max": float(self.gradient_changes.max()),
                "effective_beta": self.effective_beta, "gradient_norm": self.gradient_norm}


def direction_measures(objective: Objective, w: np.ndarray, step_sizes: Sequence[float]) -> DirectionMeasures:
    """Measure the landscape of `objective` along its gradient at w (see the module docstring).

    Inputs:
    - objective: w (P,) -> (loss, gradient (P,)); called once at w and once per step size.
    - w: the point (P,).
    - step_sizes: the etas (S,), each > 0.
    Returns: DirectionMeasures. A zero gradient (a stationary point) is an error: there is no direction.
    """
    etas = np.asarray(step_sizes, dtype=np.float64)
    if etas.ndim != 1 or etas.size == 0 or not np.all(etas > 0):
        raise ValueError(f"step_sizes must be a non-empty sequence of positive numbers, got {list(step_sizes)!r}")
    w = np.asarray(w)
    if w.ndim != 1:
        raise ValueError(f"w must be a flat vector (P,), got shape {w.shape}")
    loss, g = objective(w)
    g = np.asarray(g, dtype=np.float64)
    norm = float(np.linalg.norm(g))
    if norm == 0.0:
        raise ValueError("the gradient at w is zero: there is no direction to measure along")
    losses, changes = np.empty(len(etas)), np.empty(len(etas))
    for i, eta in enumerate(etas):
        losses[i], moved = objective((w - eta * g).astype(w.dtype, copy=False))
        changes[i] = np.linalg.norm(np.asarray(moved, dtype=np.float64) - g)
    distances = etas * norm
    return DirectionMeasures(etas, float(loss), losses, norm, distances, changes, changes / distances)


def model_objective(model: Module, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Objective]:
    """A model's training loss on one batch as a function of its parameters flattened into one vector.

    Inputs: model (in training mode: batch norm uses the batch's statistics, as the optimizer sees it);
    x, y: the batch (N, ...) and its labels (N,).
    Returns: (w, objective): the parameters now (P,), float64, and objective(w') -> (softmax cross-entropy
    (plus the model's regularization, as the Trainer adds it), its gradient (P,) float64). Each call sets the
    parameters to w' and runs a forward and a backward; afterwards the parameters, their gradients and every
    buffer (running statistics) are as they were before the call, so measuring changes nothing.
    """
    params = model.parameters()
    w = np.concatenate([p.data.ravel() for p in params]).astype(np.float64)
    bounds = np.cumsum([0] + [p.data.size for p in params])

    def objective(point: np.ndarray) -> tuple[float, np.ndarray]:
        if point.shape != w.shape:
            raise ValueError(f"the point must have the model's {w.size} parameters (P,), got shape {point.shape}")
        saved = [(p.data.copy(), p.grad) for p in params]
        buffers = {name: np.array(b, copy=True) for name, b in model.named_buffers()}
        try:
            for p, lo, hi in zip(params, bounds[:-1], bounds[1:]):
                p.data[...] = point[lo:hi].reshape(p.data.shape)
                p.grad = None
            loss, dscores = softmax_cross_entropy(model.forward(x), y)
            if hasattr(model, "regularization_loss"):
                loss += model.regularization_loss()
            with input_grad_skipped(model):  # the images need no gradient
                model.backward(dscores)
            if hasattr(model, "regularization_backward"):
                model.regularization_backward()
            grad = np.concatenate([(np.zeros(p.data.size) if p.grad is None else p.grad.ravel()) for p in params])
        finally:
            for p, (data, g) in zip(params, saved):
                p.data[...] = data
                p.grad = g
            model.load_state_dict(buffers, strict=False)
        return float(loss), grad.astype(np.float64)

    return w, objective


__all__ = ["DirectionMeasures", "Objective", "direction_measures", "model_objective"]
