"""The one vocabulary of normalization names: how each is built for (N, D) features and for (N, C, H, W)
maps, which options it takes and their defaults. `nn`, `models`, `normlab train --normalization` and the
experiments all build their normalization layers here, so a name means the same layer everywhere.

    name       (N, D) features                    (N, C, H, W) maps
    none       Identity                           Identity
    batch      BatchNorm1d(D)                     BatchNorm2d(C)
    layer      LayerNorm(D)                       GroupNorm(1, C)  (all of C, H, W; a per-channel affine)
    group      GroupNorm(G, D)                    GroupNorm(G, C)
    instance   - (a feature vector has no H x W)  InstanceNorm2d(C, affine=True)
    renorm     BatchRenorm1d(D)                   BatchRenorm2d(C)
    ghost      GhostBatchNorm1d(D, virtual)       GhostBatchNorm2d(C, virtual)

The group count: G = `default_groups(C)`, the largest divisor of C not above 32, Wu & He's (2018) default
of 32 groups where C allows it (C = 512 or 256: 32 groups; C = 100: 25 groups of 4; C = 24: 24 groups of 1).
`groups=G` overrides it and must divide C.

Placement: a model with a nonlinearity after each hidden layer puts the normalization "before" it (the batch
norm paper's x -> W x -> BN -> g) or "after" it (x -> W x -> g -> BN, as practitioners often do).

    build_norm("group", 64, spatial=True, groups=8)   # GroupNorm(8, 64)
    build_norm("ghost", 256, virtual_batch_size=32)   # GhostBatchNorm1d(256, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from normlab.checks import check_positive_int
from normlab.functional.batchrenorm import RenormSchedule
from normlab.nn.batchrenorm import BatchRenorm1d, BatchRenorm2d
from normlab.nn.container import Identity
from normlab.nn.ghostbatchnorm import GhostBatchNorm1d, GhostBatchNorm2d
from normlab.nn.module import Module
from normlab.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm

MAX_GROUPS = 32  # Wu & He (2018): G = 32 by default
PLACEMENTS = ("before", "after")  # the normalization before or after the nonlinearity
DEFAULT_PLACEMENT = "before"  # the batch norm paper's


@dataclass(frozen=True)
class NormOption:
    """One option of a normalization: its keyword, default, the type a command line converts it to, and
    what it means."""

    name: str
    default: Any
    type: type
    help: str


@dataclass(frozen=True)
class Normalization:
    """A registered normalization: build(num_features, spatial, options, dtype) -> Module, where options
    holds every option of `options` (the defaults filled in)."""

    name: str
    description: str
    options: tuple[NormOption, ...]
    build: Callable[[int, bool, dict[str, Any], Any], Module]
    spatial_only: bool = False  # instance norm: only (N, C, H, W) maps have statistics per sample and channel

    @property
    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


def default_groups(num_channels: int) -> int:
    """The largest divisor of num_channels not above MAX_GROUPS (32): the group count of "group" when none
    is given."""
    return max(g for g in range(1, min(num_channels, MAX_GROUPS) + 1) if num_channels % g == 0)


_EPS = NormOption("eps", 1e-5, float, "added to the variance")
_MOMENTUM = NormOption("momentum", 0.1, float, "weight of each batch in the running statistics")


def _groups(num_features: int, groups: int | None) -> int:
    if groups is None:
        return default_groups(num_features)
    groups = check_positive_int("groups", groups)
    if num_features % groups:
        raise ValueError(f"groups must divide the number of channels, got groups={groups} for {num_features} "
                         "channels")
    return groups


def _renorm_schedule(o: dict[str, Any]) -> RenormSchedule:
    """The given schedule, or one of the five bounds and steps (which it checks)."""
    if o["schedule"] is not None:
        return o["schedule"]
    return RenormSchedule(**{f.name: o[f.name] for f in fields(RenormSchedule)})


def _renorm(num_features: int, spatial: bool, o: dict[str, Any], dtype) -> Module:
    layer = BatchRenorm2d if spatial else BatchRenorm1d
    return layer(num_features, o["eps"], o["momentum"], schedule=_renorm_schedule(o), dtype=dtype)


_REGISTRY: dict[str, Normalization] = {}


def register_normalization(normalization: Normalization) -> None:
    """Add a normalization to the vocabulary (its name must be new)."""
    if normalization.name in _REGISTRY:
        raise ValueError(f"a normalization named {normalization.name!r} is already registered")
    _REGISTRY[normalization.name] = normalization


_RENORM = RenormSchedule()
for _n in (
    Normalization("none", "no normalization (Identity)", (), lambda c, s, o, dtype: Identity()),
    Normalization("batch", "batch norm (Ioffe & Szegedy, 2015)", (_EPS, _MOMENTUM),
                  lambda c, s, o, dtype: (BatchNorm2d if s else BatchNorm1d)(c, **o, dtype=dtype)),
    Normalization("layer", "layer norm (Ba et al., 2016); on maps GroupNorm(1, C)", (_EPS,),
                  lambda c, s, o, dtype: GroupNorm(1, c, **o, dtype=dtype) if s else LayerNorm(c, **o, dtype=dtype)),
    Normalization("group", "group norm (Wu & He, 2018)",
                  (NormOption("groups", None, int, f"number of groups (default: the largest divisor of the "
                              f"channels not above {MAX_GROUPS})"), _EPS),
                  lambda c, s, o, dtype: GroupNorm(_groups(c, o["groups"]), c, o["eps"], dtype=dtype)),
    Normalization("instance", "instance norm (Ulyanov et al., 2016), with a per-channel affine", (_EPS,),
                  lambda c, s, o, dtype: InstanceNorm2d(c, **o, affine=True, dtype=dtype), spatial_only=True),
    Normalization("renorm", "batch renormalization (Ioffe, 2017); r and d clipped by a schedule",
                  (_EPS, replace(_MOMENTUM, default=0.01),
                   NormOption("rmax", _RENORM.rmax, float, "the largest r once relaxed (r in [1/rmax, rmax])"),
                   NormOption("dmax", _RENORM.dmax, float, "the largest |d| once relaxed"),
                   NormOption("warmup_steps", _RENORM.warmup_steps, int, "steps of plain batch norm first"),
                   NormOption("rmax_full_at", _RENORM.rmax_full_at, int, "the step at which r's bound reaches rmax"),
                   NormOption("dmax_full_at", _RENORM.dmax_full_at, int, "the step at which d's bound reaches dmax"),
                   NormOption("schedule", None, RenormSchedule, "a RenormSchedule (replaces the five above)")),
                  _renorm),
    Normalization("ghost", "ghost batch norm (Hoffer et al., 2017): batch norm over virtual batches",
                  (NormOption("virtual_batch_size", 16, int, "samples per virtual batch"), _EPS, _MOMENTUM),
                  lambda c, s, o, dtype: (GhostBatchNorm2d if s else GhostBatchNorm1d)(c, **o, dtype=dtype)),
):
    register_normalization(_n)


def normalization_names() -> tuple[str, ...]:
    """Every registered name, in registration order: none, batch, layer, group, instance, renorm, ghost."""
    return tuple(_REGISTRY)


NORMALIZATIONS_2D = normalization_names()  # every name builds a layer for (N, C, H, W) maps


def get_normalization(name: str) -> Normalization:
    """The registered normalization `name`; a ValueError listing the valid names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"normalization must be one of {normalization_names()}, got {name!r}")
    return _REGISTRY[name]


def check_norm_options(name: str, options: Mapping[str, Any] | None, *, spatial: bool | None = None) -> dict:
    """The options of normalization `name` with the defaults filled in. Raises ValueError for an unknown name,
    an option the normalization does not take (naming the ones it does), or instance norm on features
    (spatial=False)."""
    norm = get_normalization(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(norm.defaults))
    if unknown:
        takes = ", ".join(norm.defaults) or "no options"
        raise ValueError(f"normalization {name!r} does not take the option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))} (it takes {takes})")
    if spatial is False and norm.spatial_only:
        raise ValueError(f"normalization {name!r} needs (N, C, H, W) maps (statistics per sample and channel over "
                         f"H x W); (N, D) features have no H x W: choose one of "
                         f"{tuple(n for n in _REGISTRY if not _REGISTRY[n].spatial_only)}")
    options = {**norm.defaults, **options}
    if name == "renorm":
        _renorm_schedule(options)
    return options


def check_placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS} (the normalization before or after the "
                         f"nonlinearity), got {placement!r}")
    return placement


def build_norm(name: str, num_features: int, *, spatial: bool = False, dtype=np.float32, **options) -> Module:
    """The normalization layer `name` for (N, num_features) features, or with spatial=True for
    (N, num_features, H, W) maps.

    Inputs:
    - name: one of `normalization_names()`.
    - num_features: D, or the channels C.
    - options: the normalization's own (see `get_normalization(name).options`), e.g. groups=8 for "group",
      virtual_batch_size=32 for "ghost", rmax=2.0 for "renorm".
    Returns: the Module.
    """
    options = check_norm_options(name, options, spatial=spatial)
    return get_normalization(name).build(int(num_features), spatial, options, dtype)

