"""The inputs a learner's layer is checked on: small float64 batches, each chosen to expose a mistake that
a friendly draw (x ~ N(0, 1), gamma = 1, beta = 0, dout = 1) hides:

- random gamma and beta (gamma = 1 hides a forgotten gamma) and a random upstream gradient (with dout = 1
  batch norm's true dx is zero, so a wrong dx compares noise with noise);
- data far from zero, each feature with its own mean and scale (a forgotten centring, mixed-up features);
- N == D (an axis mix-up keeps every shape) next to N != D, and N = 2;
- a variance far below eps (where eps is forgotten, the output changes by orders of magnitude);
- several training steps then a test step (the running averages and their momentum), and test mode with
  running statistics that differ from the batch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.check.families import Family


@dataclass(frozen=True)
class Step:
    """One forward call (and, in training, one backward call with `dout`)."""

    x: np.ndarray  # (N, D) or (N, C, H, W), float64
    mode: str  # "train" or "test"
    dout: np.ndarray | None  # x's shape in training; None in test mode


@dataclass(frozen=True)
class Case:
    """A sequence of steps sharing parameters and running statistics."""

    name: str
    purpose: str  # why this case exists, for the report
    gamma: np.ndarray  # (D,), (C,) or (1, C, 1, 1)
    beta: np.ndarray
    eps: float
    momentum: float  # in the family's own convention
    running_mean: np.ndarray | None  # (C,) initial running statistics, or None
    running_var: np.ndarray | None
    groups: int  # G for group norm, else 0
    steps: tuple[Step, ...]


def build_cases(family: Family, seed: int = 0) -> list[Case]:
    """The cases for one family, the first of them the main one (training, all features of a random draw).

    Returns a list of Case, deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    momentum = 0.9 if family.convention == "cs231n" else 0.1  # the same rule in each convention's words

    def far(shape, scale=1.0):
        """Data far from zero, each feature (channel) with its own mean (20..60) and scale (1..4)."""
        c = shape[1]
        per = (1, c) + (1,) * (len(shape) - 2)
        mean = rng.uniform(20, 60, c).reshape(per) * rng.choice([-1.0, 1.0], c).reshape(per)
        return mean + scale * rng.uniform(1, 4, c).reshape(per) * rng.standard_normal(shape)

    def case(name, purpose, shape, steps=("train",), groups=0):
        """steps: "train" and "test" draw x far from zero; "tiny" a training x of variance about 1e-6, below the
        case's eps = 1e-4 (where eps goes matters)."""
        drawn = []
        for kind in steps:
            x = 1.0 + 1e-3 * rng.standard_normal(shape) if kind == "tiny" else far(shape)
            drawn.append(Step(x, "test", None) if kind == "test" else Step(x, "train", rng.standard_normal(shape)))
        c = shape[1]
        param = (1, c, 1, 1) if family.param_shape_4d else (c,)
        gamma = rng.uniform(0.5, 2.0, param) * rng.choice([-1.0, 1.0], param)
        running = family.has_running_stats
        return Case(name, purpose, gamma, rng.standard_normal(param), 1e-4 if "tiny" in steps else 1e-5, momentum,
                    rng.uniform(-3, 3, c) if running else None, rng.uniform(0.5, 3, c) if running else None,
                    groups, tuple(drawn))

    def running_cases(shape):
        """Batch norm's running averages and test mode."""
        return [case("momentum", "three training steps, then a test step: the running averages", shape,
                     ("train", "train", "train", "test")),
                case("test", "test mode with running statistics far from the batch's", shape, ("test",))]

    if family.kind in ("batchnorm", "layernorm"):
        cases = [
            case("main", "training, N=4 D=5, data far from zero, random gamma, beta and dout", (4, 5)),
            case("square", "N == D = 4: an axis mix-up keeps every shape", (4, 4)),
            case("pair", "N = 2", (2, 3)),
            case("tiny-variance", "variance about 1e-6, below eps = 1e-4: where eps goes matters", (5, 3), ("tiny",)),
        ]
        if family.kind == "batchnorm" and family.convention == "normlab":  # normlab's batch norm takes images too
            cases.append(case("images", "training, (N, C, H, W) = (2, 3, 2, 2)", (2, 3, 2, 2)))
        return cases + running_cases((4, 5)) if family.kind == "batchnorm" else cases
    if family.kind == "spatial_batchnorm":
        return [
            case("main", "training, (N, C, H, W) = (2, 3, 2, 3), data far from zero", (2, 3, 2, 3)),
            case("square", "N == C == H == W = 3", (3, 3, 3, 3)),
            case("tiny-variance", "variance about 1e-6, below eps = 1e-4", (2, 3, 2, 2), ("tiny",)),
            *running_cases((2, 3, 2, 2)),
        ]
    return [  # group norm
        case("main", "training, (N, C, H, W) = (2, 6, 2, 3), G = 3, data far from zero", (2, 6, 2, 3), groups=3),
        case("two-groups", "(3, 4, 2, 2), G = 2", (3, 4, 2, 2), groups=2),
        case("tiny-variance", "variance about 1e-6, below eps = 1e-4, G = 2", (2, 4, 2, 2), ("tiny",), groups=2),
    ]
