"""Using a trained model: `load_run(RUN)` rebuilds a run's model with its weights and its preprocessing.

    run = load_run("runs/20260101-120000")
    run.predict(images)            # (N,) class indices of raw (N, C, H, W) uint8 images
    run.predict_proba(images)      # (N, K) softmax probabilities
    run.classes[run.predict(images)[0]]

The model is built from config.json as `run_training` built it, loaded with model.safetensors (the best
epoch's weights) and put in evaluation mode. The preprocessing is the Standardizer fitted on the run's
training split, read from preprocessing.json, so predictions are the ones training evaluated (the test
accuracy of history.json is reproduced exactly). A run written before preprocessing.json existed is
standardized by drawing the same split of the training data again (the dataset must then be found).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normlab.data import Standardizer, batch_indices
from normlab.models import build_model
from normlab.nn import Module
from normlab.train.checkpoint import load_model, load_tensors
from normlab.train.config import TrainConfig
from normlab.train.run import CONFIG, PREPROCESSING, prepare_data, run_seeds
from normlab.train.trainer import BEST_MODEL, CHECKPOINT


@dataclass
class LoadedRun:
    """A trained model and what it needs to be used on raw images."""

    run_dir: Path
    config: TrainConfig
    model: Module  # in evaluation mode
    standardizer: Standardizer
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]  # one image's (C, H, W)
    weights: dict[str, Any] = field(default_factory=dict)  # which weights: {"file", "epoch", "val_acc"}
    eval_batch_size: int = 1000  # the Trainer's, so scores are computed in the same batches as in training

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw images (N, C, H, W), uint8 0..255 or float in [0, 1] -> the model's float32 inputs."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError(f"images must be (N, {', '.join(map(str, self.input_shape))}), got shape {images.shape}")
        return self.standardizer(images)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Class scores (N, K) of standardized inputs x (N, C, H, W), in evaluation mode."""
        self.model.eval()
        parts = [self.model.forward(x[idx]) for idx in batch_indices(np.arange(len(x)), self.eval_batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K) of raw images."""
        from scipy.special import softmax

        return softmax(self.scores(self.preprocess(images)).astype(np.float64), axis=1)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class indices (N,) of raw images."""
        return self.scores(self.preprocess(images)).argmax(axis=1)


def load_run(run_dir: str | os.PathLike, *, weights: str = "best", data_dir: str | os.PathLike | None = None,
             download: bool = True) -> LoadedRun:
    """The model of a run directory written by `normlab train`, in evaluation mode, with its preprocessing.

    Inputs:
    - run_dir: the run directory (config.json, model.safetensors, preprocessing.json).
    - weights: "best" (model.safetensors, the epoch with the best validation accuracy, the weights the
      test accuracy was measured with) or "last" (checkpoint.safetensors, the latest training state).
    - data_dir, download: where to find the dataset, needed only for a run without preprocessing.json.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG} there, so it is not a run directory of normlab train")
    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
    config = TrainConfig.load(run_dir / CONFIG)
    standardizer, classes, input_shape = _preprocessing(run_dir, config, data_dir, download)
    model = build_model(config.model, input_shape=input_shape, num_classes=len(classes),
                        rng=np.random.default_rng(0), **config.model_options)  # every weight is loaded below
    path = run_dir / (BEST_MODEL if weights == "best" else CHECKPOINT)
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {path.name} there; the run has not finished an epoch")
    if weights == "best":
        meta = load_model(path, model)
        info = {"file": str(path), "epoch": meta.get("epoch"), "val_acc": meta.get("val_acc")}
    else:
        arrays, meta = load_tensors(path)
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        info = {"file": str(path), "epoch": meta.get("epochs_done"), "iteration": meta.get("iteration")}
    model.eval()
    return LoadedRun(run_dir, config, model, standardizer, classes, input_shape, info)


def _preprocessing(run_dir: Path, config: TrainConfig, data_dir, download):
    record_path = run_dir / PREPROCESSING
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        std = record.get("standardizer")
        if std is None:
            raise ValueError(f"{record_path}: records no standardizer")
        standardizer = Standardizer(np.array(std["mean"], dtype=np.float64), np.array(std["std"], dtype=np.float64))
        return standardizer, tuple(record["classes"]), tuple(int(d) for d in record["input_shape"])
    split_seed = run_seeds(config)[0]
    data = prepare_data(config, np.random.default_rng(split_seed), data_dir, download)
    return data.standardizer, data.classes, data.input_shape
