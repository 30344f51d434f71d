"""Optimizer: the base of every update rule.

An optimizer holds parameter groups (each a list of parameters and its hyperparameters, as in PyTorch) and per-parameter state (momentum buffers, moment estimates, step counts). `step()` updates every
parameter that has a gradient, in place. `state_dict()` splits the state into arrays (saved bit-exactly in
a checkpoint) and a JSON-able dict of everything else (hyperparameters, step counts), so a resumed run
continues exactly where it stopped; nothing is pickled.

A parameter is anything with a floating-point array `.data` (updated in place) and a `.grad` (an array
of the same shape, or None): `normlab.nn.Parameter` is one. optim sits below nn and does not import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


class Optimizer:
    """Base class. Subclasses set `defaults` (hyperparameter name -> default value) through `__init__`
    and implement `_update(param, grad, state, group)`, which changes `param.data` in place and keeps
    whatever it needs between steps in `state` (a dict of arrays and numbers).

    `params` is an iterable of Parameters, or of dicts {"params": [...], **overrides} to give groups of
    parameters their own hyperparameters (e.g. weight_decay=0 for gamma and beta).
    """

    def __init__(self, params: Iterable, defaults: Mapping[str, Any]):
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty parameter list")
        groups = params if isinstance(params[0], Mapping) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for index, group in enumerate(groups):
            if not isinstance(group, Mapping) or "params" not in group:
                raise TypeError(f"parameter group {index} must be a dict with a 'params' list, got {group!r}")
            unknown = set(group) - {"params"} - set(self.defaults)
            if unknown:
                raise ValueError(f"parameter group {index} has unknown options {sorted(unknown)}; "
                                 f"{type(self).__name__} takes {sorted(self.defaults)}")
            members = list(group["params"])
            for p in members:
                if not (isinstance(getattr(p, "data", None), np.ndarray) and hasattr(p, "grad")):
                    raise TypeError(f"optimizers take parameters (objects with .data and .grad, such as "
                                    f"normlab.nn.Parameter), got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
            self.param_groups.append({**self.defaults, **group, "params": members})
        for group in self.param_groups:
            self._check_hyperparameters(group)
            group.setdefault("initial_lr", group["lr"])
        self.state: list[list[dict[str, Any]]] = [[{} for _ in g["params"]] for g in self.param_groups]

    # -- the update -----------------------------------------------------------------------------------
    def step(self) -> None:
        """Update every parameter that has a gradient (parameters whose .grad is None are left alone)."""
        for group, states in zip(self.param_groups, self.state):
            for p, state in zip(group["params"], states):
                if p.grad is not None:
                    self._update(p, p.grad, state, group)

    def _update(self, param, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _zeros(state: dict[str, Any], name: str, param) -> np.ndarray:
        """state[name], a buffer of zeros shaped like the parameter made on first use (a setdefault would
        allocate one on every step)."""
        if name not in state:
            state[name] = np.zeros_like(param.data)
        return state[name]

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        """Subclasses extend this; every message names the hyperparameter and the value given."""
        check_nonnegative("lr", group["lr"])
        if "weight_decay" in group:
            check_nonnegative("weight_decay", group["weight_decay"])

    # -- learning rate ------------------------------------------------------------------------------
    def set_lr_factor(self, factor: float) -> None:
        """Set every group's lr to its initial lr times `factor` (what a schedule returns)."""
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] * factor

    @property
    def lr(self) -> float:
        """The first group's current learning rate."""
        return self.param_groups[0]["lr"]

    # -- checkpointing ------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Returns (arrays, meta): arrays maps "state.<group>.<index>.<name>" to a copy of each state array;
        meta is JSON-able: the optimizer's type, each group's hyperparameters and the non-array state."""
        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, Any] = {}
        for gi, states in enumerate(self.state):
            for pi, state in enumerate(states):
                for name, value in state.items():
                    key = f"state.{gi}.{pi}.{name}"
                    if isinstance(value, np.ndarray):
                        arrays[key] = value.copy()
                    else:
                        scalars[key] = value
        groups = [{k: v for k, v in g.items() if k != "params"} | {"num_params": len(g["params"])}
                  for g in self.param_groups]
        return arrays, {"type": type(self).__name__, "param_groups": groups, "state": scalars}

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned. The optimizer must have been built over the same parameters
        (same groups, same order, same shapes)."""
        if meta.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {meta.get('type')!r}, not {type(self).__name__!r}")
        groups = meta["param_groups"]
        if [g["num_params"] for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state does not match the parameter groups: saved group sizes "
                             f"{[g['num_params'] for g in groups]}, this optimizer has "
                             f"{[len(g['params']) for g in self.param_groups]}")
        self.state = [[{} for _ in g["params"]] for g in self.param_groups]
        for key, value in [*arrays.items(), *meta["state"].items()]:
            _, gi, pi, name = key.split(".", 3)
            param = self.param_groups[int(gi)]["params"][int(pi)]
            if isinstance(value, np.ndarray):
                if value.shape != param.data.shape:
                    raise ValueError(f"optimizer state {key}: expected shape {param.data.shape}, got {value.shape}")
                value = value.copy()
            self.state[int(gi)][int(pi)][name] = value
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "num_params"})


def check_nonnegative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def check_unit_interval(name: str, value: float) -> float:
    """A decay rate: 0 <= value < 1."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value
