"""Stochastic gradient descent, with momentum and Nesterov momentum, as torch.optim.SGD computes it."""

from __future__ import annotations

from collections.abc import Iterable

from normlab.optim.optimizer import Optimizer, check_unit_interval


class SGD(Optimizer):
    """For each parameter p with gradient g (weight decay wd, momentum mu, learning rate lr):

        d = g + wd * p                         (L2 weight decay, coupled into the gradient)
        v = d on the first step, else mu * v + d
        p = p - lr * (d + mu * v)   if nesterov
        p = p - lr * v              otherwise (p - lr * d when mu = 0)

    This is PyTorch's form (velocity in units of the gradient). CS231n writes momentum as
    v = mu * v - lr * g; p = p + v, which is the same trajectory for a constant lr.

    Defaults: lr=0.01, momentum=0, nesterov=False, weight_decay=0.
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay})

    def _check_hyperparameters(self, group) -> None:
        super()._check_hyperparameters(group)
        check_unit_interval("momentum", group["momentum"])
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")

    def _update(self, param, grad, state, group) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        d = grad + wd * param.data if wd else grad
        if mu:
            v = state.get("momentum_buffer")
            if v is None:
                v = state["momentum_buffer"] = d.astype(param.data.dtype, copy=True)
            else:
                v *= mu
                v += d
            d = d + mu * v if group["nesterov"] else v
        param.data -= (lr * d).astype(param.data.dtype, copy=False)
