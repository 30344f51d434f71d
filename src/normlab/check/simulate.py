"""What a family's functions should return on a case, from normlab's functional core (`reference`), and
what they return with one known mistake made (`simulate`, on the staged walk).

A `Layout` says how the values are grouped for the statistics: x reshaped (a pure reshape, in C order) to
an internal shape, the statistics over some of its axes and gamma shared over others. The right layout
of each normalization and the wrong ones of the catalogue are all such reshapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab import functional as F
from normlab.check.cases import Case
from normlab.check.families import Family
from normlab.check.mistakes import Mistake
from normlab.check.walk import walk
from normlab.functional.batchnorm import update_running_stats


@dataclass(frozen=True)
class Layout:
    """x of shape `shape` seen as `internal`; statistics over stat_axes, gamma shared over param_axes."""

    internal: tuple[int, ...]
    stat_axes: tuple[int, ...]
    param_axes: tuple[int, ...]

    @property
    def param_internal(self) -> tuple[int, ...]:
        return tuple(1 if k in self.param_axes else n for k, n in enumerate(self.internal))


def layout(family: Family, shape: tuple[int, ...], groups: int, wrong: str | None = None) -> Layout:
    """The family's grouping of an input of `shape`, or the catalogue's `wrong` one."""
    if family.kind == "groupnorm":
        n, c, *s = shape
        if wrong == "gn_interleaved":
            return Layout((n, c // groups, groups, *s), (1, 3, 4), (0, 3, 4))
        stat = {None: (2, 3, 4), "gn_ignores_groups": (1, 2, 3, 4), "gn_per_channel": (3, 4),
                "gn_with_batch": (0, 2, 3, 4)}[wrong]
        return Layout((n, groups, c // groups, *s), stat, (0, 3, 4))
    if len(shape) == 4:  # spatial batch norm
        if wrong == "spatial_no_transpose":
            return Layout((shape[0] * shape[2] * shape[3], shape[1]), (0,), (0,))
        return Layout(shape, (0, 2, 3), (0, 2, 3))
    stat = (1,) if (family.kind == "layernorm") != (wrong == "axes_swapped") else (0,)
    return Layout(shape, stat, (0,))


def reference(family: Family, case: Case) -> list[dict[str, np.ndarray]]:
    """Every step's expected outputs from `normlab.functional`: out (and running_mean, running_var where the
    family has them) for every step, dx, dgamma, dbeta for training steps."""
    rm = None if case.running_mean is None else case.running_mean.copy()
    rv = None if case.running_var is None else case.running_var.copy()
    c = case.gamma.size
    gamma, beta = case.gamma.reshape(c), case.beta.reshape(c)
    results = []
    for step in case.steps:
        training = step.mode == "train"
        if family.kind in ("batchnorm", "spatial_batchnorm"):
            momentum, convention = ((1 - case.momentum, "keras") if family.convention == "cs231n"
                                    else (case.momentum, "pytorch"))
            out, cache = F.batchnorm_forward(step.x, gamma, beta, rm, rv, training=training, momentum=momentum,
                                             eps=case.eps, convention=convention, backend="numpy")
            backward = F.batchnorm_backward
        elif family.kind == "layernorm":
            out, cache = F.layernorm_forward(step.x, gamma, beta, eps=case.eps, backend="numpy")
            backward = F.layernorm_backward
        else:
            out, cache = F.groupnorm_forward(step.x, gamma, beta, case.groups, eps=case.eps, backend="numpy")
            backward = F.groupnorm_backward
        result = {"out": out}
        if family.has_running_stats:
            result.update(running_mean=rm.copy(), running_var=rv.copy())
        if training:
            dx, dgamma, dbeta = backward(step.dout, cache)
            result.update(dx=dx, dgamma=dgamma.reshape(case.gamma.shape), dbeta=dbeta.reshape(case.gamma.shape))
        results.append(result)
    return results


def simulate(family: Family, case: Case, mistake: Mistake | None = None) -> list[dict]:
    """Every step of the case computed on the staged walk, with `mistake` made.

    Returns per step {"outputs": {name: array} like `reference`'s, "nodes": the walk's named nodes in the
    layout's internal shape}.
    """
    flags = mistake.flags if mistake else frozenset()
    rule = mistake.running if mistake else None
    rm = None if case.running_mean is None else case.running_mean.copy()
    rv = None if case.running_var is None else case.running_var.copy()
    results = []
    for step in case.steps:
        lay = layout(family, step.x.shape, case.groups, mistake.layout if mistake else None)
        x = step.x.reshape(lay.internal)
        gamma, beta = case.gamma.reshape(lay.param_internal), case.beta.reshape(lay.param_internal)
        dout = None if step.dout is None else step.dout.reshape(lay.internal)
        training = step.mode == "train" or rule == "test_batch_stats"
        constant = None
        if not training:
            stat_shape = tuple(1 if k in lay.stat_axes else n for k, n in enumerate(lay.internal))
            if rm.size != int(np.prod(stat_shape)):
                break  # running statistics of another size than this layout's: nothing to compare after here
            constant = (rm.reshape(stat_shape), rv.reshape(stat_shape))
        nodes = walk(x, gamma, beta, dout, case.eps, lay.stat_axes, lay.param_axes, constant_stats=constant,
                     mistakes=flags)
        outputs = {"out": nodes["out"].reshape(step.x.shape)}
        if family.has_running_stats and nodes["mu"].size == rm.size:  # else: a layout with other statistics
            updates = step.mode == "train" or rule == "test_updates_running"
            if updates and rule != "running_not_updated":
                m = x.size // rm.size
                batch = nodes if training else walk(x, gamma, beta, None, case.eps, lay.stat_axes, lay.param_axes)
                _update(family, case, rm, rv, batch["mu"], batch["var"], m, rule)
            outputs.update(running_mean=rm.copy(), running_var=rv.copy())
        if step.mode == "train":
            outputs.update(dx=nodes["dx"].reshape(step.x.shape),
                           dgamma=_param(nodes["dgamma"], case.gamma.shape),
                           dbeta=_param(nodes["dbeta"], case.gamma.shape))
        results.append({"outputs": outputs, "nodes": nodes})
    return results


def _update(family: Family, case: Case, rm, rv, mean, var, m: int, rule: str | None) -> None:
    cs231n = family.convention == "cs231n"
    momentum = 1 - case.momentum if cs231n else case.momentum  # the batch's weight, in normlab's words
    if rule == "momentum_reversed":
        momentum = 1 - momentum
    keras = cs231n != (rule == "running_var_other")
    update_running_stats(rm, rv, mean, var, m, momentum, "keras" if keras else "pytorch")


def _param(gradient: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A parameter gradient in the shape the function must return it, when its size allows."""
    return gradient.reshape(shape) if gradient.size == int(np.prod(shape)) else gradient
