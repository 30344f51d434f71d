"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from normlab.functional._checks import check_positive
from normlab.optim.optimizer import Optimizer, check_unit_interval


class Adam(Optimizer):
    """For each parameter p with gradient g, at step t = 1, 2, ...:

        g = g + wd * p                              (L2, coupled into the gradient, as torch.optim.Adam)
        m = beta1 * m + (1 - beta1) * g             (m, v start at 0)
        v = beta2 * v + (1 - beta2) * g^2
        p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    Defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.
    """

    _decoupled = False

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def _check_hyperparameters(self, group) -> None:
        super()._check_hyperparameters(group)
        if len(group["betas"]) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {group['betas']!r}")
        for i, beta in enumerate(group["betas"]):
            check_unit_interval(f"betas[{i}]", beta)
        check_positive("eps", group["eps"])

    def _update(self, param, grad, state, group) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if wd and self._decoupled:
            param.data *= param.data.dtype.type(1 - lr * wd)
        elif wd:
            grad = grad + wd * param.data
        t = state["step"] = state.get("step", 0) + 1
        m = self._zeros(state, "exp_avg", param)
        v = self._zeros(state, "exp_avg_sq", param)
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        param.data -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(param.data.dtype, copy=False)


class AdamW(Adam):
    """Adam with decoupled weight decay: each step first shrinks the weights, p = p * (1 - lr * wd), then
    takes Adam's step with the plain gradient, so the decay is not rescaled by the adaptive denominator.
    Give the parameters that should not decay (biases, gamma and beta) a group with weight_decay=0.

    Defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2 (PyTorch's).
    """

    _decoupled = True

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
