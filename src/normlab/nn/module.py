"""Module: the stateful layer over `normlab.functional`.

A module owns parameters (arrays with gradients), buffers (state that is saved but not trained, such as
running statistics) and child modules. `forward(x)` computes the output and keeps what its backward needs;
`backward(dout)` returns the gradient with respect to the input and adds the parameters' gradients into
their `.grad`. State dicts use PyTorch's names (`weight`, `bias`, `running_mean`, `running_var`,
`num_batches_tracked`, children joined with dots) so they move between normlab and PyTorch unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np


class Parameter:
    """A trainable array and its gradient (None until a backward pass, or after `zero_grad`)."""

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
            raise TypeError(f"Parameter data must be a floating-point numpy.ndarray, got {getattr(data, 'dtype', type(data))}")
        self.data = data
        self.grad: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def accumulate_grad(self, grad: np.ndarray) -> None:
        """Add `grad` (shape of data) into .grad, cast to the parameter's dtype."""
        if grad.shape != self.data.shape:
            raise ValueError(f"gradient must have the parameter's shape {self.data.shape}, got {grad.shape}")
        grad = grad.astype(self.data.dtype, copy=False)
        if self.grad is None:
            self.grad = grad.copy()
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class. Subclasses set parameters, buffers and children as attributes (buffers through
    `register_buffer`) and implement `forward(x)` and `backward(dout)`.

    `needs_input_grad` (True by default) says whether `backward` must return the gradient with respect to
    the input. When it is False a layer may skip that product and return None, as PyTorch skips it for an
    input that does not require grad: Linear and Conv2d do, and Sequential runs no backward before its first
    layer with parameters and tells that layer. `input_grad_skipped(model)` sets it for one backward.

    A module keeps what its backward needs from its input, never its output array: the caller owns the
    output and may change it in place (ResidualBlock adds the skip connection into bn2's output).
    """

    needs_input_grad: bool = True

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() before assigning {name!r} in {type(self).__name__}")
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Module):
            target = self._modules
        elif name in self.__dict__.get("_buffer_names", ()):
            target = self._buffers
        else:
            target = None
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not target:
                registry.pop(name, None)
        if target is not None:
            target[name] = value  # replacing keeps the entry's place, so forward and state dict order stay
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Declare `name` a buffer: saved in the state dict, not trained."""
        names = self.__dict__.setdefault("_buffer_names", set())
        names.add(name)
        setattr(self, name, value)

    # -- traversal ----------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def _named(self, *registries: str) -> Iterator[tuple[str, object]]:
        """The entries of every module's `registries` ("_parameters", "_buffers") that are not None, by dotted
        name, module by module (PyTorch's state dict order)."""
        for prefix, module in self.named_modules():
            for registry in registries:
                for name, value in getattr(module, registry).items():
                    if value is not None:
                        yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        return self._named("_parameters")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        return self._named("_buffers")

    # -- modes and gradients ------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer by dotted name, in PyTorch's order: module by module, each
        module's parameters, then its buffers."""
        return {name: np.array(value, copy=True, order="C") for name, value in self._arrays()}

    def _arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every parameter's data and every buffer, the arrays themselves, by dotted name in state dict order."""
        for name, value in self._named("_parameters", "_buffers"):
            yield name, value.data if isinstance(value, Parameter) else value

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers of the same names (values, not references).

        With strict=True, missing and unexpected keys are an error, listed by name. Shapes must match and
        dtypes must cast safely within their kind (float64 into float32 is fine, float into an integer
        buffer or text into anything is not). All or nothing: every entry is checked before any is copied,
        so a bad entry leaves the model as it was.
        """
        own = dict(self._arrays())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state dict does not match the model: missing keys {missing}, unexpected keys {unexpected}")
        copies = []  # (target, value), all checked before the first copy
        for name, value in state.items():
            if name not in own:
                continue
            target, value = own[name], np.asarray(value)
            if value.shape != target.shape:
                raise ValueError(f"{name}: expected shape {target.shape} in the state dict, got {value.shape}")
            if value.dtype.kind not in "biuf" or not np.can_cast(value.dtype, target.dtype, casting="same_kind"):
                raise TypeError(f"{name}: expected a {target.dtype} array (or one that casts to it) in the state "
                                f"dict, got {value.dtype}")
            copies.append((target, value))
        for target, value in copies:
            target[...] = value

    # -- computation --------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def _cache_or_raise(self, cache):
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return cache

    # -- printing -----------------------------------------------------------------------------------
    def summary(self, input_shape=None):
        """Layers, output shapes and parameter counts on samples of `input_shape` (one sample's shape;
        optional for models that know theirs). Returns a `normlab.nn.summary.ModelSummary`; print it."""
        from normlab.nn.summary import summarize

        return summarize(self, input_shape)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, child in self._modules.items():
                child_repr = repr(child).replace("\n", "\n  ")
                lines.append(f"\n  ({name}): {child_repr}")
            lines.append("\n")
        return "".join(lines) + ")"


class _FunctionalLayer(Module):
    """A layer without parameters around a functional pair: `_forward(x, *self._arguments()) -> (out, cache)`
    and `_backward(dout, cache) -> dx`."""

    _forward = _backward = None  # staticmethod(F.<layer>_forward), staticmethod(F.<layer>_backward)

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def _arguments(self) -> tuple:
        return ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = self._forward(x, *self._arguments())
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self._backward(dout, self._cache_or_raise(self._cache))


@contextlib.contextmanager
def input_grad_skipped(model: Module) -> Iterator[None]:
    """Within the block, `model.backward` need not compute the gradient with respect to its input (see
    `Module`). For a training step, whose input is data: a first convolution's input gradient is a product
    as large as its weight gradient, and nothing reads it."""
    before = model.needs_input_grad
    model.needs_input_grad = False
    try:
        yield
    finally:
        model.needs_input_grad = before
