"""A model summary: every layer with its output shape and parameter count, then the totals (Keras's
`model.summary()`, torchinfo's `summary`).

The output shapes come from one evaluation-mode forward pass of a batch of one zero sample through a deep
copy of the model: each of the copy's modules has its `forward` wrapped (the instance attribute shadows the
class's method) to record the shape it returns. The model itself is not run, so its weights, buffers, modes,
generators and forward caches (what a following backward reads) are all left as they were.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from normlab.nn.module import Module


@dataclass(frozen=True)
class LayerRow:
    name: str  # dotted module path, as in the state dict ("1", "3.conv1")
    depth: int  # 0 for the model's children, 1 for theirs, ...
    kind: str  # the module's class name
    output_shape: tuple[int, ...] | None  # (N, ...) with N = 1; None if the forward pass did not reach it
    parameters: int  # elements of its parameters, its children's included
    buffers: int  # elements of its buffers (running statistics), its children's included


@dataclass(frozen=True)
class ModelSummary:
    """Rows in the order of `named_modules` and the model's totals; `str()` gives the table."""

    model: str
    input_shape: tuple[int, ...]
    rows: tuple[LayerRow, ...]
    total_parameters: int
    total_buffers: int
    parameter_bytes: int

    def __str__(self) -> str:
        header = ("layer", "type", "output shape", "parameters")
        body = [("  " * r.depth + r.name, r.kind, _shape(r.output_shape), f"{r.parameters:,}" if r.parameters else "-")
                for r in self.rows]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

        def fmt(line: Sequence[str]) -> str:  # the parameter counts right-aligned
            return "  ".join([*map(str.ljust, line[:3], widths), line[3].rjust(widths[3])]).rstrip()

        rule = "-" * len(fmt(["-" * w for w in widths]))
        lines = [f"{self.model} on inputs {_shape((1, *self.input_shape))}", rule, fmt(header), rule,
                 *map(fmt, body), rule,
                 f"parameters: {self.total_parameters:,} ({self.parameter_bytes / 2**20:.2f} MiB)",
                 f"buffers (running statistics, not trained): {self.total_buffers:,}"]
        return "\n".join(lines)

    __repr__ = __str__


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "(" + ", ".join(map(str, shape)) + ")"


def _sizes(module: Module) -> tuple[int, int]:
    """Elements of a module's parameters and of its buffers, its children's included."""
    return sum(p.data.size for p in module.parameters()), sum(b.size for _, b in module.named_buffers())


def summarize(model: Module, input_shape: Sequence[int] | None = None) -> ModelSummary:
    """The summary of `model` on samples of `input_shape`.

    Inputs:
    - model: a normlab Module whose forward takes (N, *input_shape) batches.
    - input_shape: one sample's shape, (D,) or (C, H, W); may be left out when the model was built by
      `normlab.models.build_model` (it remembers its `input_shape`) or its first layer with weights is a
      Linear.
    Returns a ModelSummary (print it for the table).
    """
    shape = _input_shape(model, input_shape)
    dtype = next((p.data.dtype for p in model.parameters()), np.dtype(np.float32))
    outputs: dict[str, tuple[int, ...]] = {}
    # The pass runs on a copy: every layer's forward overwrites its cache (the one its backward reads), so a
    # pass on the model itself would leave a forward -> summary() -> backward sequence with the summary's
    # evaluation-mode batch of one in place of the training batch's caches.
    probe = copy.deepcopy(model)
    for name, module in probe.named_modules():
        if not name:
            continue

        def recording(x, _forward=module.forward, _name=name):
            out = _forward(x)
            outputs.setdefault(_name, tuple(np.shape(out)))
            return out

        object.__setattr__(module, "forward", recording)
    probe.eval()
    try:
        out = probe.forward(np.zeros((1, *shape), dtype=dtype))
    except Exception as error:
        raise ValueError(f"{type(model).__name__} does not take inputs of shape {(1, *shape)} (input_shape "
                         f"{shape}): {type(error).__name__}: {error}") from error
    # A row per submodule; a model without any (a single layer) is its own row.
    layers = [(name, m) for name, m in model.named_modules() if name] or [(type(model).__name__, model)]
    rows = [LayerRow(name, name.count("."), type(m).__name__, tuple(np.shape(out)) if m is model else outputs.get(name),
                     *_sizes(m)) for name, m in layers]
    parameter_bytes = sum(p.data.nbytes for p in model.parameters())
    return ModelSummary(type(model).__name__, shape, tuple(rows), *_sizes(model), parameter_bytes)


def _input_shape(model: Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        # The first layer with weights; a Linear (after a Flatten, say) takes flat (D,) samples.
        first = next((m for m in model.modules() if not m._modules and m.parameters()), None)
        if first is not None and hasattr(first, "in_features"):
            return (int(first.in_features),)
        raise ValueError(f"input_shape is required: {type(model).__name__} does not record one and its first "
                         "layer with weights is not a Linear, so one sample's shape, e.g. (1, 28, 28), cannot be "
                         "inferred")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be one sample's shape, (D,) or (C, H, W), got {input_shape!r}")
    return shape
