"""The layers `normlab check` knows, by the names and signatures a learner's file gives them.

A family is one normalization in one calling convention: its forward, the backward functions that take
the forward's cache, how to call them, the shapes their outputs must have and how the normalization maps
onto the staged graph (`Layout`). Two conventions:

- CS231n assignment 2 (`cs231n/layers.py`): `batchnorm_forward(x, gamma, beta, bn_param)` with bn_param's
  mode, eps, momentum (running = momentum * running + (1 - momentum) * batch) and the running statistics
  stored back into bn_param, biased variance throughout; `layernorm_forward(x, gamma, beta, ln_param)`;
  `spatial_batchnorm_forward(x, gamma, beta, bn_param)`; `spatial_groupnorm_forward(x, gamma, beta, G,
  gn_param)` with gamma and beta of shape (1, C, 1, 1).
- normlab's own (`normlab.functional`): `batchnorm_forward(x, gamma, beta, running_mean, running_var, *,
  training, momentum, eps)` updating the running statistics in place (running = (1 - momentum) * running
  + momentum * batch, the unbiased variance stored), `layernorm_forward(x, gamma, beta, *, eps)`,
  `groupnorm_forward(x, gamma, beta, num_groups, *, eps)`.

This module is imported by the child process that runs the learner's code, so it imports only NumPy.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Family:
    """One normalization in one calling convention."""

    kind: str  # "batchnorm", "layernorm", "spatial_batchnorm" or "groupnorm"
    convention: str  # "cs231n" or "normlab"
    forward: str  # the forward function's name
    backwards: tuple[str, ...]  # names of the backward functions that take its cache

    @property
    def key(self) -> str:
        """The convention and the forward's name: "cs231n-batchnorm", "cs231n-spatial-groupnorm", ..."""
        return f"{self.convention}-{self.forward.removesuffix('_forward').replace('_', '-')}"

    @property
    def has_running_stats(self) -> bool:
        return self.kind in ("batchnorm", "spatial_batchnorm")

    @property
    def param_shape_4d(self) -> bool:
        """gamma and beta are (1, C, 1, 1) rather than (C,): CS231n's group norm."""
        return self.convention == "cs231n" and self.kind == "groupnorm"

    def matches(self, positional: list[str]) -> bool:
        """Whether a forward whose positional parameters have these names is this family's convention."""
        if self.kind == "batchnorm" and self.convention == "normlab":
            return "running_mean" in positional
        if "running_mean" in positional:
            return False
        wanted = {("cs231n", "groupnorm"): 5, ("normlab", "groupnorm"): 4, ("normlab", "layernorm"): 3}
        return len(positional) == wanted.get((self.convention, self.kind), 4)


FAMILIES = (
    Family("batchnorm", "cs231n", "batchnorm_forward", ("batchnorm_backward", "batchnorm_backward_alt")),
    Family("layernorm", "cs231n", "layernorm_forward", ("layernorm_backward",)),
    Family("spatial_batchnorm", "cs231n", "spatial_batchnorm_forward", ("spatial_batchnorm_backward",)),
    Family("groupnorm", "cs231n", "spatial_groupnorm_forward", ("spatial_groupnorm_backward",)),
    Family("batchnorm", "normlab", "batchnorm_forward",
           ("batchnorm_backward", "batchnorm_backward_staged", "batchnorm_backward_alt")),
    Family("layernorm", "normlab", "layernorm_forward", ("layernorm_backward", "layernorm_backward_staged")),
    Family("groupnorm", "normlab", "groupnorm_forward", ("groupnorm_backward",)),
)
BY_KEY = {f.key: f for f in FAMILIES}
# Every function name `normlab check` looks for.
KNOWN_NAMES = tuple(sorted({f.forward for f in FAMILIES} | {b for f in FAMILIES for b in f.backwards}))


def positional_parameters(function) -> list[str] | None:
    """The names of a callable's positional parameters, or None when it has no readable signature."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds]


def find_families(signatures: dict[str, list[str] | None]) -> tuple[list[Family], list[str]]:
    """The families whose forward a module defines, and notes on the functions found but not checkable.

    Inputs:
    - signatures: {function name: positional parameter names (None: unreadable)} for the module's known names.
    """
    found, notes = [], []
    for name in sorted({f.forward for f in FAMILIES}):
        if name not in signatures:
            continue
        params = signatures[name] or []
        family = next((f for f in FAMILIES if f.forward == name and f.matches(params)), None)
        if family is None:
            notes.append(f"{name}({', '.join(params)}): neither CS231n's nor normlab's signature; not checked")
        else:
            found.append(family)
    covered = {f.forward for f in found} | {b for f in found for b in f.backwards}
    for name in sorted(set(signatures) - covered):
        owners = [f.forward for f in FAMILIES if name in f.backwards]
        if owners:
            notes.append(f"{name} found without its forward {owners[0]}: not checked (it needs the forward's cache)")
    return found, notes


# -- calling the learner's functions (in the child process) --------------------------------------------------

def initial_state(family: Family, case) -> dict:
    """The mutable state a sequence of forward calls shares: CS231n's bn_param, or normlab's running arrays."""
    if family.convention == "cs231n" and family.has_running_stats:
        return {"mode": "train", "eps": case.eps, "momentum": case.momentum,
                "running_mean": case.running_mean.copy(), "running_var": case.running_var.copy()}
    if family.has_running_stats:
        return {"running_mean": case.running_mean.copy(), "running_var": case.running_var.copy()}
    return {"eps": case.eps}


def forward_call(family: Family, function, case, x: np.ndarray, mode: str, state: dict, gamma=None, beta=None):
    """Call the learner's forward on one step; returns what it returned."""
    gamma = case.gamma.copy() if gamma is None else gamma
    beta = case.beta.copy() if beta is None else beta
    if family.convention == "cs231n":
        if family.has_running_stats:
            state["mode"] = mode
            return function(x, gamma, beta, state)
        if family.kind == "groupnorm":
            return function(x, gamma, beta, case.groups, state)
        return function(x, gamma, beta, state)
    if family.kind == "batchnorm":
        return function(x, gamma, beta, state["running_mean"], state["running_var"], training=mode == "train",
                        momentum=case.momentum, eps=case.eps)
    if family.kind == "groupnorm":
        return function(x, gamma, beta, case.groups, eps=case.eps)
    return function(x, gamma, beta, eps=case.eps)
