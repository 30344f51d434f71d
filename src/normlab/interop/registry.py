"""Converters keyed by normlab module type: one small entry per layer type and framework.

`normlab.interop.torch` and `normlab.interop.keras` each keep a `ConverterRegistry`; converting a model
walks its modules and asks the registry for each module's converter. Supporting a new layer is one more
`register` call, next to the layer's siblings, for example:

    TORCH_TWINS.register(Conv2d, TorchTwin(torch_class=lambda torch: torch.nn.Conv2d, to_torch=..., from_torch=...))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np

from normlab import nn
from normlab.models.cnn import ResNetCNN, ThreeLayerConvNet  # interop sits above models
from normlab.models.fcnet import FullyConnectedNet

C = TypeVar("C")
# The models of normlab.models that are Sequentials with a name and a constructor: they convert (and fold)
# as Sequentials.
NAMED_SEQUENTIALS = (FullyConnectedNet, ThreeLayerConvNet, ResNetCNN)


class ConverterRegistry(Generic[C]):
    """Converters by module type, matched exactly: a subclass may compute something else than its base
    (GhostBatchNorm1d is not BatchNorm1d in training), so it converts only once it registers a converter
    itself (its base's, `registry.register(MyNorm, registry.lookup(BatchNorm1d))`, if that is right)."""

    def __init__(self, target: str):
        self.target = target  # what the converters produce, for messages ("a torch.nn.Module")
        self._by_type: dict[type, C] = {}

    def register(self, module_type: type, converter: C, *, replace: bool = False) -> C:
        if not isinstance(module_type, type):
            raise TypeError(f"module_type must be a class, got {module_type!r}")
        if module_type in self._by_type and not replace:
            raise ValueError(f"{module_type.__name__} already has a converter to {self.target}; "
                             "pass replace=True to override it")
        self._by_type[module_type] = converter
        return converter

    def lookup(self, module_type: type) -> C:
        if module_type in self._by_type:
            return self._by_type[module_type]
        raise TypeError(f"no converter from {module_type.__name__} to {self.target}; supported: "
                        f"{', '.join(self.names())}. Register one with the registry's register(type, converter)")

    def items(self) -> Iterator[tuple[type, C]]:
        yield from self._by_type.items()

    def names(self) -> list[str]:
        return sorted(t.__name__ for t in self._by_type)

    def __contains__(self, module_type: type) -> bool:
        return module_type in self._by_type


def float_dtype(arrays) -> np.dtype | None:
    """The dtype of the first floating-point array in `arrays` (a module's own parameters and buffers),
    or None if there is none: the dtype a layer's twin is built in."""
    return next((a.dtype for a in arrays if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)), None)


def own_arrays(module: nn.Module) -> list[np.ndarray]:
    """A module's own parameters' data and buffers (not its children's)."""
    return [p.data for p in module._parameters.values()] + [b for b in module._buffers.values() if b is not None]
