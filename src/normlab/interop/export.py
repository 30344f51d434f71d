"""Exporting a normlab model to a file another runtime loads without normlab (`normlab export`).

- "onnx": the torch twin (`to_torch`) exported by `torch.onnx.export` (the torch.export-based exporter,
  which needs onnxscript), input "images" (N, C, H, W) with a dynamic batch, output "logits" (N, K);
  run it with onnxruntime. `metadata` goes into the model's metadata_props.
- "torch": the torch twin as a `torch.export` ExportedProgram (.pt2, the successor of TorchScript):
  `torch.export.load(path).module()(x)`, no normlab and no model class needed; `metadata` is stored as
  the extra file "normlab.json".
- "keras": the Keras twin (`to_keras`) saved as a .keras file: `keras.saving.load_model(path)`, on
  channels-last inputs (N, H, W, C).

The exported model takes the inputs the normlab model takes (standardized images), not raw pixels; the
standardization's statistics are in `metadata` (`normlab export` records them). `fold=True` first merges
evaluation-mode batch norms into the layers before them (`fold_batchnorm`). `run_exported` loads a file
back with its own runtime, so that an export can be checked against normlab's scores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from normlab import nn
from normlab.interop.fold import fold_batchnorm
from normlab.interop.keras import import_keras, to_keras
from normlab.interop.torch import import_torch, to_torch

FORMATS = {"onnx": ".onnx", "torch": ".pt2", "keras": ".keras"}
INPUT_NAME, OUTPUT_NAME = "images", "logits"
METADATA_FILE = "normlab.json"  # the torch format's extra file


def export_model(model: nn.Module, input_shape: tuple[int, ...], fmt: str, path: str | os.PathLike, *,
                 fold: bool = False, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write `model` (evaluation mode) to `path` in format `fmt`; the model itself is not changed.

    Inputs:
    - model: a normlab Module that the interop twins support.
    - input_shape: one sample's shape, (C, H, W) or (D,).
    - fmt: "onnx", "torch" or "keras" (see the module docstring).
    - fold: merge evaluation-mode batch norms into the layer before them first.
    - metadata: JSON-able facts stored in the file (onnx, torch formats).
    Returns the path written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        exported = fold_batchnorm(model) if fold else model
        if fmt == "keras":
            to_keras(exported, input_shape).save(path)
        else:
            _export_torch_twin(exported, input_shape, fmt, path, dict(metadata or {}))
    finally:
        model.train(was_training)
    return path


def _export_torch_twin(model: nn.Module, input_shape: tuple[int, ...], fmt: str, path: Path,
                       metadata: dict[str, Any]) -> None:
    torch = import_torch()
    twin = to_torch(model).eval()
    example = (torch.zeros((2, *input_shape), dtype=torch.float32),)  # 2: torch.export specializes 0 and 1
    batch = torch.export.Dim("batch")
    with _quiet_exporters():
        if fmt == "torch":
            program = torch.export.export(twin, example, dynamic_shapes=({0: batch},))
            torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(metadata)})
            return
        _import_onnx()
        program = torch.onnx.export(twin, example, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def run_exported(path: str | os.PathLike, fmt: str, x: np.ndarray) -> np.ndarray:
    """Scores (N, K) of the exported model at `path` on inputs x (N, *input_shape) in normlab's layout, run
    by the format's own runtime (onnxruntime, torch.export.load, keras.saving.load_model)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if fmt == "onnx":
        ort = _import_onnx()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    if fmt == "torch":
        torch = import_torch()
        module = torch.export.load(str(path)).module()
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    if fmt == "keras":
        keras = import_keras()
        model = keras.saving.load_model(str(path))
        inputs = x.transpose(0, *range(2, x.ndim), 1) if x.ndim > 2 else x  # channels-last
        return np.asarray(model(inputs, training=False))
    raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")


def read_metadata(path: str | os.PathLike, fmt: str) -> dict[str, Any]:
    """The `metadata` stored by export_model (onnx and torch formats)."""
    if fmt == "onnx":
        import onnx

        return {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if fmt == "torch":
        torch = import_torch()
        extra = {METADATA_FILE: ""}
        torch.export.load(str(path), extra_files=extra)
        return json.loads(extra[METADATA_FILE] or "{}")
    raise ValueError(f"only the onnx and torch formats store metadata, got {fmt!r}")


def _import_onnx():
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as error:
        raise ImportError(f'ONNX export needs onnx, onnxscript and onnxruntime: pip install "normlab[onnx]" '
                          f"({error})") from error
    return onnxruntime


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """torch's exporters log that torchvision's operators are not registered and warn about internals
    of their own; none of it concerns a normlab model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)
