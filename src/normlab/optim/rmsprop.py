"""RMSProp (Hinton, Lecture 6e): divide the gradient by a running root mean square of recent gradients."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from normlab.functional._checks import check_positive
from normlab.optim.optimizer import Optimizer, check_unit_interval


class RMSProp(Optimizer):
    """For each parameter p with gradient g:

        g = g + wd * p
        s = alpha * s + (1 - alpha) * g^2          (s starts at 0)
        p = p - lr * g / (sqrt(s) + eps)

    as torch.optim.RMSprop (CS231n calls alpha decay_rate). Defaults: lr=0.01, alpha=0.99, eps=1e-8,
    weight_decay=0.
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay})

    def _check_hyperparameters(self, group) -> None:
        super()._check_hyperparameters(group)
        check_unit_interval("alpha", group["alpha"])
        check_positive("eps", group["eps"])

    def _update(self, param, grad, state, group) -> None:
        lr, alpha, eps, wd = group["lr"], group["alpha"], group["eps"], group["weight_decay"]
        g = grad + wd * param.data if wd else grad
        s = self._zeros(state, "square_avg", param)
        s *= alpha
        s += (1 - alpha) * g * g
        param.data -= (lr * g / (np.sqrt(s) + eps)).astype(param.data.dtype, copy=False)
