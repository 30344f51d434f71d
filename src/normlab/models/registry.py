"""Models by name, so `normlab train --model NAME` and the experiments can build any of them.

A model module registers a builder:

    @register_model("fcnet")
    def build_fcnet(*, input_shape, num_classes, rng, **options) -> Module: ...

`input_shape` is one sample's shape, (C, H, W) for images; `options` are the model's own keywords
(e.g. normalization="batch").
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from normlab.nn import Module

ModelBuilder = Callable[..., Module]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorate


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, rng: np.random.Generator,
                **options) -> Module:
    """Build the registered model `name` for samples of `input_shape` and `num_classes` classes."""
    if name not in _BUILDERS:
        raise ValueError(f"model must be one of {available_models()}, got {name!r}")
    return _BUILDERS[name](input_shape=tuple(input_shape), num_classes=num_classes, rng=rng, **options)
