"""PyTorch twins of normlab models: `to_torch(model)` and `from_torch(module)`.

Each supported layer type has one `TorchTwin` in `TORCH_TWINS`, which maps hyperparameters only (a
normlab Linear(3, 4) <-> torch.nn.Linear(3, 4)). The weights, running statistics and
num_batches_tracked then move in a single `load_state_dict`, by name: normlab's state dict names are
PyTorch's, so a normlab checkpoint (state dict or safetensors file) loads into the twin unchanged, and
back. Each twin keeps its layer's dtype and training mode.

What does not carry over: a Dropout's random generator (torch draws its masks from torch's generator),
and, for batch norm with convention="keras", the running-variance update in training: torch stores the
unbiased batch variance, so from the first training step on the twin's running_var drifts from the
normlab model's by the factor M / (M - 1) in each batch's contribution (M values per channel). Evaluation
with the copied statistics is identical.

PyTorch is imported on first use; install it with `pip install "normlab[torch]"`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from normlab import nn
from normlab.interop.registry import ConverterRegistry, float_dtype, own_arrays

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Conversion:
    """What a converter gets besides the layer: the torch package, a function that converts a child
    module the same way (for containers), and, from torch, the generator for new normlab layers' initial
    values and dropout masks and the dtype of the layer's own tensors."""

    torch: ModuleType
    convert: Callable
    rng: np.random.Generator | None = None
    dtype: np.dtype = np.dtype(np.float32)


@dataclass(frozen=True)
class TorchTwin:
    """How one normlab layer type and its torch.nn twin map to each other.

    - torch_class(torch) -> the twin's class (a function, so torch is imported only when used).
    - to_torch(module, conversion) -> a torch.nn.Module with the same hyperparameters.
    - from_torch(torch_module, conversion) -> a normlab Module with the same hyperparameters.
    Neither copies weights: `to_torch` / `from_torch` move the whole state dict afterwards.
    """

    torch_class: Callable[[ModuleType], type]
    to_torch: Callable
    from_torch: Callable


TORCH_TWINS: ConverterRegistry[TorchTwin] = ConverterRegistry("a torch.nn.Module")


def import_torch() -> ModuleType:
    try:
        import torch
    except ImportError as error:
        raise ImportError('normlab.interop.torch needs PyTorch: pip install "normlab[torch]"') from error
    return torch


def to_torch(model: nn.Module) -> torch.nn.Module:
    """The torch.nn twin of a normlab model, with its weights and running statistics copied.

    Inputs:
    - model: a normlab Module built from supported layers (`TORCH_TWINS.names()`).
    Returns a torch.nn.Module whose state_dict has the same names, values, dtypes and order, and whose
    modules are in the same training / evaluation modes.
    """
    torch = import_torch()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a normlab.nn.Module, got {type(model).__name__}")

    def convert(module: nn.Module) -> torch.nn.Module:
        twin = TORCH_TWINS.lookup(type(module)).to_torch(module, Conversion(torch, convert))
        dtype = float_dtype(own_arrays(module))
        if dtype is not None:
            twin.to(torch.from_numpy(np.empty(0, dtype)).dtype)
        twin.training = module.training
        return twin

    twin = convert(model)
    state = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin


def from_torch(module: torch.nn.Module, *, rng: np.random.Generator | None = None) -> nn.Module:
    """The normlab twin of a torch.nn module built from supported layers, weights and running statistics
    copied.

    Inputs:
    - module: a torch.nn.Module (Linear, BatchNorm1d/2d, LayerNorm, GroupNorm, activations, Dropout,
      Flatten, Identity, Sequential, ...).
    - rng: the generator of the new model's Dropout masks (a fresh unseeded one if None).
    Returns a normlab Module with the same state dict names and values, dtypes and modes.
    """
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    rng = np.random.default_rng() if rng is None else rng
    by_torch_class = {twin.torch_class(torch): twin for _, twin in TORCH_TWINS.items()}

    def convert(t: torch.nn.Module) -> nn.Module:
        twin = by_torch_class.get(type(t))  # exact class, as in the registry
        if twin is None:
            names = sorted(cls.__name__ for cls in by_torch_class)
            raise TypeError(f"no converter from torch {type(t).__name__} to normlab; supported: {', '.join(names)}")
        model = twin.from_torch(t, Conversion(torch, convert, rng, _numpy_dtype(torch, t)))
        model.training = t.training
        return model

    model = convert(module)
    model.load_state_dict({name: v.detach().cpu().numpy() for name, v in module.state_dict().items()}, strict=True)
    return model


def _numpy_dtype(torch: ModuleType, t: torch.nn.Module) -> np.dtype:
    tensors = [*t.parameters(recurse=False), *t.buffers(recurse=False)]
    dtype = next((x.dtype for x in tensors if x.is_floating_point()), torch.float32)
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError as error:
        raise TypeError(f"{type(t).__name__} holds {dtype} tensors, which NumPy has no dtype for; "
                        "convert the module to float32 first (module.float())") from error


# -- the converters, one per layer type -----------------------------------------------------------------

def _register(normlab_type: type | None, torch_name: str, to_torch: Callable, from_torch: Callable) -> None:
    if normlab_type is not None:
        TORCH_TWINS.register(normlab_type, TorchTwin(lambda torch: getattr(torch.nn, torch_name), to_torch, from_torch))


def _stateless(normlab_type: type, torch_name: str) -> None:
    """Layers without hyperparameters: ReLU, Sigmoid, Tanh, Identity."""
    _register(normlab_type, torch_name, lambda m, c: getattr(c.torch.nn, torch_name)(), lambda t, c: normlab_type())


for _type in (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity):
    _stateless(_type, _type.__name__)


def _sequential_to_torch(m: nn.Sequential, c: Conversion):
    return c.torch.nn.Sequential(OrderedDict((name, c.convert(child)) for name, child in m._modules.items()))


def _sequential_from_torch(t, c: Conversion) -> nn.Sequential:
    seq = nn.Sequential()
    for name, child in t.named_children():  # keeps the names, so the state dict names stay the same
        setattr(seq, name, c.convert(child))
    return seq


_register(nn.Sequential, "Sequential", _sequential_to_torch, _sequential_from_torch)


def _flatten_from_torch(t, c: Conversion) -> nn.Flatten:
    if (t.start_dim, t.end_dim) != (1, -1):
        raise ValueError(f"normlab's Flatten flattens dims 1 to -1; got torch Flatten(start_dim={t.start_dim}, "
                         f"end_dim={t.end_dim})")
    return nn.Flatten()


_register(nn.Flatten, "Flatten", lambda m, c: c.torch.nn.Flatten(), _flatten_from_torch)
_register(nn.Dropout, "Dropout", lambda m, c: c.torch.nn.Dropout(m.p), lambda t, c: nn.Dropout(t.p, rng=c.rng))
_register(
    nn.Linear, "Linear",
    lambda m, c: c.torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    lambda t, c: nn.Linear(t.in_features, t.out_features, bias=t.bias is not None, rng=c.rng, dtype=c.dtype),
)


def _batchnorm_twin(normlab_type: type, torch_name: str) -> None:
    def to_torch(m, c: Conversion):
        return getattr(c.torch.nn, torch_name)(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                                               track_running_stats=m.track_running_stats)

    def from_torch(t, c: Conversion):
        return normlab_type(t.num_features, eps=t.eps, momentum=t.momentum, affine=t.affine,
                            track_running_stats=t.track_running_stats, dtype=c.dtype)

    _register(normlab_type, torch_name, to_torch, from_torch)


_batchnorm_twin(nn.BatchNorm1d, "BatchNorm1d")
_batchnorm_twin(nn.BatchNorm2d, "BatchNorm2d")


def _layernorm_from_torch(t, c: Conversion) -> nn.LayerNorm:
    if t.elementwise_affine and t.bias is None:
        raise ValueError("torch LayerNorm(bias=False) has no normlab equivalent: normlab's LayerNorm has "
                         "both weight and bias, or neither")
    return nn.LayerNorm(t.normalized_shape, eps=t.eps, elementwise_affine=t.elementwise_affine, dtype=c.dtype)


_register(
    nn.LayerNorm, "LayerNorm",
    lambda m, c: c.torch.nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine),
    _layernorm_from_torch,
)
_register(
    nn.GroupNorm, "GroupNorm",
    lambda m, c: c.torch.nn.GroupNorm(m.num_groups, m.num_channels, eps=m.eps, affine=m.affine),
    lambda t, c: nn.GroupNorm(t.num_groups, t.num_channels, eps=t.eps, affine=t.affine, dtype=c.dtype),
)
