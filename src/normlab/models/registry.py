"""Models by name, so `normlab train --model NAME` and the experiments can build any of them.

A model module registers a builder, a function or the model's class itself:

    @register_model("fcnet")
    class FullyConnectedNet(Sequential):
        def __init__(self, input_shape=None, ..., normalization="batch", dropout=0.0, ..., rng=None): ...

and is imported in `normlab/models/__init__.py` so that importing normlab.models registers it.

The builder's contract:
- `input_shape` is one sample's shape, (C, H, W) for images (datasets give float32 (N, C, H, W) batches;
  fully connected models flatten); `num_classes` the number of scores; `rng` a numpy.random.Generator
  that draws every initial weight (and seeds any Dropout's generator), or None for a fresh unseeded one.
- Everything else is a keyword option with a default. `normlab train` passes an option only when the
  builder's signature names it, under these common names: `normalization` (a name of
  `normlab.nn.normalization_names()`: none, batch, layer, group, instance, renorm, ghost), `norm_options`
  (that normalization's options, a JSON-able dict such as {"groups": 8}), `placement` ("before" or "after"
  the nonlinearity), `dropout` (probability of dropping), `hidden_dims` (sizes of hidden layers),
  `weight_scale` ("he" or a number), `reg` (L2 strength on weights, see `normlab.models.regularization`).
  An option the user gives explicitly that the builder does not take is an error.
- The model returns class scores (logits) from `forward(x)`. If it has `regularization_loss()` and
  `regularization_backward()`, the trainer adds the first to the loss and calls the second after
  backward.
- A builder may have the attribute `default_augment = True` to ask for random crops
  and flips when the user does not say `--augment` / `--no-augment`, and `normalizes = "features"` or
  `"maps"` to say what its normalization layers see (so a configuration asking instance norm of a fully
  connected model is refused before training).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from normlab.checks import resolve_rng
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


def model_builder(name: str) -> ModelBuilder:
    """The builder registered as `name` (to read its signature or its `default_augment`)."""
    if name not in _BUILDERS:
        raise ValueError(f"model must be one of {available_models()}, got {name!r}")
    return _BUILDERS[name]


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int,
                rng: np.random.Generator | None = None, **options) -> Module:
    """Build the registered model `name` for samples of `input_shape` and `num_classes` classes, its weights
    drawn by `rng` (a fresh unseeded generator if None). The model remembers `input_shape` (for
    `model.summary()` and the exports)."""
    rng = resolve_rng(rng)
    model = model_builder(name)(input_shape=tuple(input_shape), num_classes=num_classes, rng=rng, **options)
    model.input_shape = tuple(int(d) for d in input_shape)
    return model
