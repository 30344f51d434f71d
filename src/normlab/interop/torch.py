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
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from normlab import nn
from normlab.interop.registry import NAMED_SEQUENTIALS, ConverterRegistry, float_dtype, own_arrays

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

def _register(normlab_type: type, torch_name: str, to_torch: Callable, from_torch: Callable) -> None:
    TORCH_TWINS.register(normlab_type, TorchTwin(lambda torch: getattr(torch.nn, torch_name), to_torch, from_torch))


def _sequential_to_torch(m: nn.Sequential, c: Conversion):
    return c.torch.nn.Sequential(OrderedDict((name, c.convert(child)) for name, child in m._modules.items()))


def _sequential_from_torch(t, c: Conversion) -> nn.Sequential:
    seq = nn.Sequential()
    for name, child in t.named_children():  # keeps the names, so the state dict names stay the same
        setattr(seq, name, c.convert(child))
    return seq


_register(nn.Sequential, "Sequential", _sequential_to_torch, _sequential_from_torch)


def _same_hyperparameters(normlab_type: type, torch_name: str, names: tuple[str, ...] = (), *,
                          new_arrays: tuple[str, ...] = ("dtype",), check: Callable | None = None) -> None:
    """A layer whose hyperparameters `names` are attributes and constructor arguments of the same name in
    normlab and torch ("bias": whether there is one). `new_arrays`: the Conversion's rng and dtype, for the
    new normlab layer's own arrays; `check(t)` refuses the torch options normlab has no equivalent for."""

    def hyperparameters(layer) -> dict:
        return {name: layer.bias is not None if name == "bias" else getattr(layer, name) for name in names}

    def from_torch(t, c: Conversion):
        if check is not None:
            check(t)
        return normlab_type(**hyperparameters(t), **{name: getattr(c, name) for name in new_arrays})

    _register(normlab_type, torch_name, lambda m, c: getattr(c.torch.nn, torch_name)(**hyperparameters(m)),
              from_torch)


for _type in (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity):
    _same_hyperparameters(_type, _type.__name__, new_arrays=())


def _check_flatten(t) -> None:
    if (t.start_dim, t.end_dim) != (1, -1):
        raise ValueError(f"normlab's Flatten flattens dims 1 to -1; got torch Flatten(start_dim={t.start_dim}, "
                         f"end_dim={t.end_dim})")


def _check_layernorm(t) -> None:
    if t.elementwise_affine and t.bias is None:
        raise ValueError("torch LayerNorm(bias=False) has no normlab equivalent: normlab's LayerNorm has "
                         "both weight and bias, or neither")


def _check_conv2d(t) -> None:
    if tuple(t.dilation) != (1, 1):
        raise ValueError(f"normlab's Conv2d has no dilation; got torch Conv2d(dilation={t.dilation})")
    if t.padding_mode != "zeros" or isinstance(t.padding, str):
        raise ValueError("normlab's Conv2d pads with zeros by an explicit amount; got torch Conv2d("
                         f"padding={t.padding!r}, padding_mode={t.padding_mode!r})")


def _check_pool(t) -> None:
    unsupported = {"padding": (getattr(t, "padding", 0), (0, (0, 0))),
                   "dilation": (getattr(t, "dilation", 1), (1, (1, 1))),
                   "ceil_mode": (t.ceil_mode, (False,)),
                   "divisor_override": (getattr(t, "divisor_override", None), (None,))}
    for name, (value, allowed) in unsupported.items():
        if value not in allowed:
            kind = type(t).__name__
            raise ValueError(f"normlab's {kind} has no {name}; got torch {kind}({name}={value!r})")


def _check_instancenorm(t) -> None:
    if t.track_running_stats:
        raise ValueError("normlab's InstanceNorm2d keeps no running statistics; got torch "
                         "InstanceNorm2d(track_running_stats=True)")


_same_hyperparameters(nn.Flatten, "Flatten", new_arrays=(), check=_check_flatten)
_same_hyperparameters(nn.Dropout, "Dropout", ("p",), new_arrays=("rng",))
_same_hyperparameters(nn.Linear, "Linear", ("in_features", "out_features", "bias"), new_arrays=("rng", "dtype"))
for _type in (nn.BatchNorm1d, nn.BatchNorm2d):
    _same_hyperparameters(_type, _type.__name__, ("num_features", "eps", "momentum", "affine", "track_running_stats"))
_same_hyperparameters(nn.LayerNorm, "LayerNorm", ("normalized_shape", "eps", "elementwise_affine"),
                      check=_check_layernorm)
_same_hyperparameters(nn.GroupNorm, "GroupNorm", ("num_groups", "num_channels", "eps", "affine"))
_same_hyperparameters(nn.Conv2d, "Conv2d", ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                            "groups", "bias"), new_arrays=("rng", "dtype"), check=_check_conv2d)
for _type in (nn.MaxPool2d, nn.AvgPool2d):
    _same_hyperparameters(_type, _type.__name__, ("kernel_size", "stride"), new_arrays=(), check=_check_pool)
# torch's default track_running_stats=False is the only one normlab's InstanceNorm2d has
_same_hyperparameters(nn.InstanceNorm2d, "InstanceNorm2d", ("num_features", "eps", "affine"),
                      check=_check_instancenorm)


# torch has no layer for these two; their twin classes are defined once (cache), on first use, so importing
# this module does not import torch.

@cache
def _global_avg_pool_class(torch: ModuleType) -> type:
    class GlobalAvgPool2d(torch.nn.Module):
        """(N, C, H, W) -> (N, C): the mean of each channel, as normlab.nn.GlobalAvgPool2d."""

        def forward(self, x):
            return x.mean(dim=(2, 3))

    return GlobalAvgPool2d


@cache
def _residual_block_class(torch: ModuleType) -> type:
    class ResidualBlock(torch.nn.Module):
        """normlab.nn.ResidualBlock's twin: the same children in the same order (conv1, bn1, conv2, bn2,
        shortcut or None), out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

        def __init__(self, conv1, bn1, conv2, bn2, shortcut):
            super().__init__()
            self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = conv1, bn1, conv2, bn2, shortcut

        def forward(self, x):
            hidden = torch.relu(self.bn1(self.conv1(x)))
            skip = x if self.shortcut is None else self.shortcut(x)
            return torch.relu(self.bn2(self.conv2(hidden)) + skip)

    return ResidualBlock


TORCH_TWINS.register(nn.GlobalAvgPool2d, TorchTwin(
    _global_avg_pool_class, lambda m, c: _global_avg_pool_class(c.torch)(),
    lambda t, c: nn.GlobalAvgPool2d()))


def _residual_to_torch(m: nn.ResidualBlock, c: Conversion):
    shortcut = None if m.shortcut is None else c.convert(m.shortcut)
    return _residual_block_class(c.torch)(c.convert(m.conv1), c.convert(m.bn1), c.convert(m.conv2),
                                          c.convert(m.bn2), shortcut)


def _residual_from_torch(t, c: Conversion) -> nn.ResidualBlock:
    """Builds the block from conv1's channels and stride, then puts in the converted children, so their
    options (norm groups, eps, biases) are torch's and not norm2d's defaults."""
    torch_norms = {c.torch.nn.BatchNorm2d: "batch", c.torch.nn.GroupNorm: "group",
                   c.torch.nn.InstanceNorm2d: "instance", c.torch.nn.Identity: "none"}
    if type(t.bn1) not in torch_norms:
        raise ValueError(f"ResidualBlock's bn1 must be one of {', '.join(k.__name__ for k in torch_norms)}, "
                         f"got {type(t.bn1).__name__}")
    normalization = torch_norms[type(t.bn1)]
    if normalization == "group" and t.bn1.num_groups == 1:
        normalization = "layer"  # norm2d's "layer" is GroupNorm(1, C)
    stride = t.conv1.stride[0]
    block = nn.ResidualBlock(t.conv1.in_channels, t.conv2.out_channels, stride, normalization,
                             rng=c.rng, dtype=c.dtype)
    if (t.shortcut is None) != (block.shortcut is None):
        raise ValueError(f"ResidualBlock({t.conv1.in_channels}, {t.conv2.out_channels}, stride={stride}) "
                         f"{'needs' if block.shortcut is not None else 'has no'} shortcut, got {t.shortcut!r}")
    for name in ("conv1", "bn1", "conv2", "bn2"):
        setattr(block, name, c.convert(getattr(t, name)))
    if t.shortcut is not None:
        block.shortcut = c.convert(t.shortcut)
    return block


TORCH_TWINS.register(nn.ResidualBlock, TorchTwin(_residual_block_class, _residual_to_torch, _residual_from_torch))
# Their twin is a torch Sequential; from_torch gives back a plain normlab Sequential with the same children.
for _model_type in NAMED_SEQUENTIALS:
    TORCH_TWINS.register(_model_type, TORCH_TWINS.lookup(nn.Sequential))
