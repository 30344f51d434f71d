"""Keras 3 twins of normlab models: `to_keras(model, input_shape)`.

The twin is a functional `keras.Model`, built for the TensorFlow backend (`KERAS_BACKEND` defaults to
"tensorflow" here; install with `pip install "normlab[tensorflow]"`). Each supported layer type has one
`KerasConverter` in `KERAS_CONVERTERS`: a function that adds the layer's Keras layers to the graph, and a
table saying which Keras variable holds each normlab parameter or buffer and how its layout changes.
Every Keras layer that holds weights is named after its normlab module's path ("0", "3.bn1", ...), so
`state_dict_from_keras` can read the weights (or their gradients) back under normlab's names.

Conventions that change on the way:
- Layout: normlab is channels-first, Keras channels-last. A (N, C, *spatial) normlab tensor is a
  (N, *spatial, C) Keras tensor; the Keras model's input and output use Keras's layout. Flatten of a
  channels-last tensor first permutes it to channels-first, so the Linear after it needs no reordering.
- Linear weight (out, in) is a Dense kernel (in, out). LayerNorm's (C, *spatial) weight becomes
  (*spatial, C).
- Batch norm: Keras's momentum is the weight of the old running value, 1 - normlab's momentum (normlab
  / PyTorch 0.1 <-> Keras 0.9; Keras's default 0.99 is normlab 0.01). epsilon is copied (Keras's default
  is 1e-3, normlab's 1e-5). Keras stores the biased batch variance in its moving variance, which is
  normlab's convention="keras". For the default convention="pytorch", normlab's running_var is
  (a running average of) the unbiased variance and cannot be turned into the biased one without each
  batch's size, so it is copied as it is: the twin predicts exactly what the normlab model predicts in
  evaluation, and in training each batch adds its biased variance where normlab adds the unbiased one
  (a factor M / (M - 1), M values per channel). Keras has no momentum=None (cumulative average) and no
  track_running_stats=False; those raise.
- Training mode is chosen per call in Keras (`model(x, training=True)`), not stored on the layers.
- Dropout draws its masks from Keras's generator, not the normlab module's.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from normlab import nn
from normlab.interop.registry import NAMED_SEQUENTIALS, ConverterRegistry, float_dtype


def _channels_last(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 0, -1)  # (C, *spatial) -> (*spatial, C); the identity on 1-D


def _channels_first(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, -1, 0)


@dataclass(frozen=True)
class WeightLink:
    """Where a normlab parameter or buffer lives in the Keras layer: the variable's name there, and the
    layout change each way."""

    keras_name: str
    to_keras: Callable[[np.ndarray], np.ndarray] = np.asarray
    from_keras: Callable[[np.ndarray], np.ndarray] = np.asarray


@dataclass(frozen=True)
class Build:
    """What a converter's build function gets besides the module and the Keras input tensor: the keras
    package, the name for its weighted layer (the module's path), the dtype, and `convert(child, x,
    child_name)` for containers."""

    keras: ModuleType
    name: str
    dtype: str
    convert: Callable

    def child_name(self, name: str) -> str:
        return f"{self.name}.{name}" if self.name != ROOT_NAME else name

    def layer(self, keras_name: str, *args, suffix: str = "", **kwargs):
        """A new keras.layers.<keras_name>(*args, **kwargs) in the model's dtype, named `name + suffix`."""
        return getattr(self.keras.layers, keras_name)(*args, name=self.name + suffix, dtype=self.dtype, **kwargs)


@dataclass(frozen=True)
class KerasConverter:
    """build(module, x, build) -> the output tensor, after adding the module's Keras layers on x.
    weights: normlab parameter / buffer name -> its `WeightLink` in the Keras layer named build.name."""

    build: Callable[[nn.Module, Any, Build], Any]
    weights: Mapping[str, WeightLink] = field(default_factory=dict)


KERAS_CONVERTERS: ConverterRegistry[KerasConverter] = ConverterRegistry("a Keras layer")
ROOT_NAME = "root"  # the Keras name of the model's top module, whose normlab path is ""


def import_keras() -> ModuleType:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        with _each_startup_line_once():
            import keras
    except ImportError as error:
        raise ImportError('normlab.interop.keras needs Keras 3 and TensorFlow: '
                          'pip install "normlab[tensorflow]"') from error
    if int(keras.__version__.split(".")[0]) < 3:
        raise ImportError(f"normlab.interop.keras needs Keras 3, found keras {keras.__version__}: "
                          'pip install "normlab[tensorflow]"')
    return keras


_LOG_PREFIX = re.compile(rb"^[IWEF]\d{4} [\d:.]+\s+\d+ ")  # absl's "I0000 00:00:1796.. 13359 ", which differs


@contextlib.contextmanager
def _each_startup_line_once() -> Iterator[None]:
    """Print what importing TensorFlow writes to stderr with each line once. Its C++ start-up lines (oneDNN,
    the CPU features) come from every shared library of TensorFlow that logs them, so twice, differing
    only in their time stamps. The lines are held back (file descriptor 2 goes to a temporary file) and
    written when the import ends, or fails."""
    if "tensorflow" in sys.modules:  # nothing more to print
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            first = {}  # each line without its prefix -> its first occurrence
            for line in held.read().splitlines(keepends=True):
                first.setdefault(_LOG_PREFIX.sub(b"", line), line)
            sys.stderr.write(b"".join(first.values()).decode(errors="replace"))
            sys.stderr.flush()


def to_keras(model: nn.Module, input_shape: tuple[int, ...] | None = None):
    """The Keras 3 twin of a normlab model, with its weights and running statistics copied.

    Inputs:
    - model: a normlab Module built from supported layers (`KERAS_CONVERTERS.names()`).
    - input_shape: one sample's shape in normlab's layout, (D,) or (C, H, W); may be left out when the
      model starts with a Linear.
    Returns a functional `keras.Model` taking (N, D) or channels-last (N, H, W, C) inputs.
    """
    keras = import_keras()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a normlab.nn.Module, got {type(model).__name__}")
    arrays = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    dtype = str(float_dtype(arrays) or np.dtype(np.float32))

    def convert(module: nn.Module, x, name: str):
        return KERAS_CONVERTERS.lookup(type(module)).build(module, x, Build(keras, name, dtype, convert))

    inputs = keras.Input(shape=_keras_input_shape(model, input_shape), dtype=dtype, name="input")
    outputs = convert(model, inputs, ROOT_NAME)
    twin = keras.Model(inputs, outputs, name=f"normlab_{type(model).__name__}")
    load_state_dict_into_keras(model, twin, model.state_dict())
    return twin


def state_dict_from_keras(model: nn.Module, twin, values: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Read the Keras twin's variables back under normlab's names and layouts.

    Inputs:
    - model: the normlab model the twin was built from (it names the variables).
    - twin: the `keras.Model` from `to_keras(model)`.
    - values: optional arrays keyed by Keras variable path (e.g. {v.path: g for v, g in zip(vars, grads)}
      from a GradientTape) to translate instead of the variables' values.
    Returns {normlab name: array}: every parameter and running statistic that Keras holds (or, with
    `values`, those of them that `values` has); num_batches_tracked has no Keras counterpart.
    """
    out = {}
    for full_name, variable, link in _links(model, twin):
        value = variable.numpy() if values is None else values.get(variable.path)
        if value is not None:
            out[full_name] = link.from_keras(np.asarray(value))
    return out


def _keras_input_shape(model: nn.Module, input_shape) -> tuple[int, ...]:
    """One sample's shape in Keras's layout: (D,), or (C, H, W) -> (H, W, C)."""
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"input_shape must be one sample's shape, (D,) or (C, H, W), got {input_shape!r}")
        return shape if len(shape) < 2 else (*shape[1:], shape[0])
    first = next((m for m in model.modules() if not m._modules), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ValueError(f"input_shape is required: the model starts with {type(first).__name__}, not a Linear, "
                     "so one sample's shape, e.g. (3, 32, 32), cannot be inferred")


def _links(model: nn.Module, twin):
    """(normlab name, Keras variable, WeightLink) for every normlab array held by a Keras variable."""
    for path, module in model.named_modules():
        links = KERAS_CONVERTERS.lookup(type(module)).weights
        own = {*module._parameters, *(k for k, b in module._buffers.items() if b is not None)}
        names = [k for k in links if k in own]
        if not names:
            continue
        variables = {v.name: v for v in twin.get_layer(path or ROOT_NAME).weights}
        for local in names:
            yield (f"{path}.{local}" if path else local), variables[links[local].keras_name], links[local]


# -- the converters, one per layer type -----------------------------------------------------------------

def _register(normlab_type: type, build: Callable, weights: Mapping[str, WeightLink] | None = None) -> None:
    KERAS_CONVERTERS.register(normlab_type, KerasConverter(build, dict(weights or {})))


def _sequential(m: nn.Sequential, x, b: Build):
    for name, child in m._modules.items():
        x = b.convert(child, x, b.child_name(name))
    return x


_register(nn.Sequential, _sequential)
_register(nn.Identity, lambda m, x, b: x)

for _type, _activation in ((nn.ReLU, "relu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh")):
    _register(_type, lambda m, x, b, a=_activation: b.layer("Activation", a)(x))

_register(nn.Dropout, lambda m, x, b: b.layer("Dropout", m.p)(x))


def _flatten(m: nn.Flatten, x, b: Build):
    rank = len(x.shape)
    if rank > 2:  # back to channels-first, so the features come out in normlab's (C, *spatial) order
        order = (rank - 1, *range(1, rank - 1))
        x = b.layer("Permute", order, suffix=".channels_first")(x)
    return b.layer("Flatten")(x)


_register(nn.Flatten, _flatten)


def _linear(m: nn.Linear, x, b: Build):
    if len(x.shape) != 2:
        raise ValueError(f"Linear {b.name!r} gets a {len(x.shape)}-D tensor; it needs (N, {m.in_features})")
    return b.layer("Dense", m.out_features, use_bias=m.bias is not None)(x)


_register(nn.Linear, _linear, {"weight": WeightLink("kernel", np.transpose, np.transpose), "bias": WeightLink("bias")})


def _batchnorm(m, x, b: Build):
    if m.momentum is None:
        raise ValueError(f"batch norm {b.name!r} has momentum=None (a cumulative average), which Keras's "
                         "BatchNormalization cannot do; give it a momentum in [0, 1]")
    if not m.track_running_stats:
        raise ValueError(f"batch norm {b.name!r} has track_running_stats=False; Keras's BatchNormalization "
                         "always uses its moving statistics in inference")
    momentum = 1.0 - m.momentum
    return b.layer("BatchNormalization", axis=-1, momentum=momentum, epsilon=m.eps, center=m.affine, scale=m.affine)(x)


_BATCHNORM_WEIGHTS = {"weight": WeightLink("gamma"), "bias": WeightLink("beta"),
                      "running_mean": WeightLink("moving_mean"), "running_var": WeightLink("moving_variance")}
_register(nn.BatchNorm1d, _batchnorm, _BATCHNORM_WEIGHTS)
_register(nn.BatchNorm2d, _batchnorm, _BATCHNORM_WEIGHTS)


def _layernorm(m: nn.LayerNorm, x, b: Build):
    rank = len(x.shape)
    if rank - 1 != len(m.normalized_shape):
        raise ValueError(f"LayerNorm {b.name!r} normalizes {m.normalized_shape}, but gets a {rank}-D tensor")
    # normlab's LayerNorm normalizes every axis but the batch axis, whatever the layout
    affine = m.elementwise_affine
    return b.layer("LayerNormalization", axis=list(range(1, rank)), epsilon=m.eps, center=affine, scale=affine)(x)


_CHANNELS_LAST = (_channels_last, _channels_first)  # normlab -> Keras, Keras -> normlab
_LAYERNORM_WEIGHTS = {"weight": WeightLink("gamma", *_CHANNELS_LAST), "bias": WeightLink("beta", *_CHANNELS_LAST)}
_register(nn.LayerNorm, _layernorm, _LAYERNORM_WEIGHTS)
_GROUPNORM_WEIGHTS = {"weight": WeightLink("gamma"), "bias": WeightLink("beta")}


def _group_normalization(groups: int, m, x, b: Build):
    return b.layer("GroupNormalization", groups, axis=-1, epsilon=m.eps, center=m.affine, scale=m.affine)(x)


_register(nn.GroupNorm, lambda m, x, b: _group_normalization(m.num_groups, m, x, b), _GROUPNORM_WEIGHTS)


# -- convolutional layers -------------------------------------------------------------------------------

def _conv2d(m: nn.Conv2d, x, b: Build):
    if m.padding != (0, 0):  # Keras's padding="same" is not torch's for stride > 1; pad explicitly
        x = b.layer("ZeroPadding2D", m.padding, suffix=".pad")(x)
    return b.layer("Conv2D", m.out_channels, m.kernel_size, strides=m.stride, padding="valid", groups=m.groups,
                   use_bias=m.bias is not None)(x)


# (out, in/groups, kh, kw) <-> Keras's (kh, kw, in/groups, out)
_CONV_KERNEL = WeightLink("kernel", lambda w: np.transpose(w, (2, 3, 1, 0)), lambda k: np.transpose(k, (3, 2, 0, 1)))
_register(nn.Conv2d, _conv2d, {"weight": _CONV_KERNEL, "bias": WeightLink("bias")})


def _pool(keras_name: str):
    def build(m, x, b: Build):
        return b.layer(keras_name, m.kernel_size, strides=m.stride, padding="valid")(x)
    return build


_register(nn.MaxPool2d, _pool("MaxPooling2D"))
_register(nn.AvgPool2d, _pool("AveragePooling2D"))
_register(nn.GlobalAvgPool2d, lambda m, x, b: b.layer("GlobalAveragePooling2D")(x))
# instance norm is group norm with one channel per group
_register(nn.InstanceNorm2d, lambda m, x, b: _group_normalization(m.num_features, m, x, b), _GROUPNORM_WEIGHTS)


def _residual_block(m: nn.ResidualBlock, x, b: Build):
    hidden = b.convert(m.bn1, b.convert(m.conv1, x, b.child_name("conv1")), b.child_name("bn1"))
    hidden = b.layer("Activation", "relu", suffix=".relu1")(hidden)
    residual = b.convert(m.bn2, b.convert(m.conv2, hidden, b.child_name("conv2")), b.child_name("bn2"))
    skip = x if m.shortcut is None else b.convert(m.shortcut, x, b.child_name("shortcut"))
    out = b.layer("Add", suffix=".add")([residual, skip])
    return b.layer("Activation", "relu", suffix=".relu2")(out)


_register(nn.ResidualBlock, _residual_block)
for _model_type in NAMED_SEQUENTIALS:
    KERAS_CONVERTERS.register(_model_type, KERAS_CONVERTERS.lookup(nn.Sequential))


def keras_variables(model: nn.Module, twin) -> dict[str, Any]:
    """{normlab name: the Keras variable holding it} for the twin `to_keras(model)` built; the layouts
    differ as `WeightLink`s say (a Linear's weight is the transposed Dense kernel)."""
    return {name: variable for name, variable, _ in _links(model, twin)}


def load_state_dict_into_keras(model: nn.Module, twin, state: Mapping[str, np.ndarray]) -> None:
    """Assign normlab-named arrays (a state dict of `model`) to the twin's variables, in Keras layouts.
    Names the twin has no variable for (num_batches_tracked) are skipped."""
    for full_name, variable, link in _links(model, twin):
        variable.assign(link.to_keras(np.asarray(state[full_name])))
