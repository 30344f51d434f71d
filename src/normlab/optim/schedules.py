"""Learning-rate schedules. A schedule maps the number of steps already taken (0, 1, 2, ...) to a factor
that multiplies each parameter group's initial learning rate:

    optimizer.set_lr_factor(schedule(step)); optimizer.step()

Schedules are pure functions of the step, so a resumed run needs only the step count to continue them.
"""

from __future__ import annotations

import math

from normlab.checks import check_non_negative_int, check_positive_int


class Schedule:
    """A factor of the initial learning rate as a function of the step. A subclass gives its `name` and keeps
    its arguments as attributes of the same names, in order."""

    name = ""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def to_config(self) -> dict:
        """The schedule's name and arguments, for config.json."""
        arguments = vars(self).items()  # a schedule among them (LinearWarmup's `after`) gives its own config
        return {"name": self.name, **{k: v.to_config() if isinstance(v, Schedule) else v for k, v in arguments}}


class Constant(Schedule):
    """factor = 1 at every step."""

    name = "constant"

    def __call__(self, step: int) -> float:
        return 1.0


class StepDecay(Schedule):
    """factor = gamma ** (step // step_size): multiply the learning rate by gamma every step_size steps
    (torch.optim.lr_scheduler.StepLR). Defaults: gamma=0.1."""

    name = "step"

    def __init__(self, step_size: int, gamma: float = 0.1):
        check_positive_int("step_size", step_size, what="number of steps")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.step_size, self.gamma = step_size, gamma

    def __call__(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


class Cosine(Schedule):
    """Cosine annealing from 1 down to `final` over `total_steps` (Loshchilov & Hutter, 2017, without
    restarts): factor = final + (1 - final) * (1 + cos(pi * step / total_steps)) / 2, and `final` after
    total_steps. Defaults: final=0."""

    name = "cosine"

    def __init__(self, total_steps: int, final: float = 0.0):
        check_positive_int("total_steps", total_steps)
        if not 0.0 <= final <= 1.0:
            raise ValueError(f"final must be in [0, 1] (a fraction of the initial lr), got {final!r}")
        self.total_steps, self.final = total_steps, final

    def __call__(self, step: int) -> float:
        progress = min(step, self.total_steps) / self.total_steps
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LinearWarmup(Schedule):
    """factor = after(step) * (step + 1) / warmup_steps for the first warmup_steps steps, then after(step):
    a linear ramp that keeps the first updates small while Adam's moments and batch norm's statistics
    settle (Goyal et al., 2017). `after` defaults to Constant()."""

    name = "warmup"

    def __init__(self, warmup_steps: int, after: Schedule | None = None):
        check_non_negative_int("warmup_steps", warmup_steps)
        self.warmup_steps, self.after = warmup_steps, Constant() if after is None else after

    def __call__(self, step: int) -> float:
        ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return ramp * self.after(step)
