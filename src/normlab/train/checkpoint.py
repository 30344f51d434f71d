"""Checkpoints and model files, written atomically (see `normlab.files`).

Arrays go into safetensors files (no pickle: loading one cannot run code); everything else (step counts,
random generator states, history) is JSON, stored in the safetensors header's metadata under "normlab".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from normlab.files import atomic_write_bytes
from normlab.nn import Module

METADATA_KEY = "normlab"


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> None:
    """Save arrays (any shape, 0-d included) and a JSON-able `meta` dict to a safetensors file, atomically."""
    # Not np.ascontiguousarray: it turns 0-d arrays (num_batches_tracked) into 1-d ones.
    arrays = {k: np.require(v, requirements="C") for k, v in tensors.items()}
    header = {METADATA_KEY: json.dumps(meta)} if meta is not None else None
    atomic_write_bytes(path, safetensors.numpy.save(arrays, metadata=header))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Returns (arrays, meta) from a file written by `save_tensors` (meta is {} when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    return _read(path, arrays=True)


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the JSON metadata of a file written by `save_tensors` (the arrays are not read)."""
    return _read(path, arrays=False)[1]


def _read(path: str | os.PathLike, arrays: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if arrays else {}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if METADATA_KEY not in header:
        return tensors, {}
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: damaged metadata: not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(  # noqa: TRY004 (a damaged file: the callers report ValueError)
            f"{path}: damaged metadata: expected a JSON object, got {type(meta).__name__}")
    return tensors, meta


def save_model(path: str | os.PathLike, model: Module, meta: Mapping[str, Any] | None = None) -> None:
    """The model's state dict (PyTorch's key names) as safetensors: torch can load it with
    safetensors.torch.load_file and module.load_state_dict."""
    save_tensors(path, model.state_dict(), meta)


def load_model(path: str | os.PathLike, model: Module) -> dict[str, Any]:
    """Load weights saved by `save_model` into `model` (strict: the keys must match). Returns the meta."""
    arrays, meta = load_tensors(path)
    model.load_state_dict(arrays)
    return meta
