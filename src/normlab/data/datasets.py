"""Image classification datasets by name: images as (N, C, H, W) uint8, labels as (N,) int64."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normlab.data import cifar10
from normlab.data.errors import DataFormatError
from normlab.data.idx import read_idx
from normlab.data.sources import SOURCES, Fetch, locate

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class ImageDataset:
    """A dataset's standard train and test sets, as stored (no scaling, no split)."""

    name: str
    x_train: np.ndarray  # (N, C, H, W) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, C, H, W) uint8
    y_test: np.ndarray  # (M,) int64
    classes: tuple[str, ...]
    directory: Path  # where the files were found

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def available_datasets() -> list[str]:
    return sorted(SOURCES)


def load_dataset(name: str, path: str | os.PathLike | None = None, *, download: bool = True,
                 fetch: Fetch | None = None) -> ImageDataset:
    """Find (see `normlab.data.sources.locate`), read and check the dataset `name`: "fashion-mnist",
    "mnist" or "cifar10"."""
    if name not in SOURCES:
        raise ValueError(f"dataset must be one of {available_datasets()}, got {name!r}")
    directory = locate(SOURCES[name], path, download=download, fetch=fetch)
    if name == "cifar10":
        x_train, y_train, x_test, y_test, classes = cifar10.read_cifar10(directory / "cifar-10-batches-py")
        return ImageDataset(name, x_train, y_train, x_test, y_test, tuple(classes), directory)
    classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    x_train, y_train = read_idx_pair(directory / "train-images-idx3-ubyte.gz", directory / "train-labels-idx1-ubyte.gz")
    x_test, y_test = read_idx_pair(directory / "t10k-images-idx3-ubyte.gz", directory / "t10k-labels-idx1-ubyte.gz")
    return ImageDataset(name, x_train, y_train, x_test, y_test, classes, directory)


def read_idx_pair(images_path: Path, labels_path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX image file (N, H, W) and its label file (N,). Returns images (N, 1, H, W) uint8 and
    labels (N,) int64, after checking that they match."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
                              f"of shape {images.shape}")
    if labels.ndim != 1:
        raise DataFormatError(f"{labels_path}: expected labels of shape (N,), got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataFormatError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in "
                              f"{images_path.name}")
    return images[:, None], check_labels(labels_path, labels, num_classes)


def check_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels must be integers in [0, num_classes): a float label file would be truncated and a negative
    label would count as a wrong prediction, both silently. Returns them as int64."""
    if labels.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise DataFormatError(f"{path}: labels must lie in [0, {num_classes}), got {bad.size} outside it "
                              f"(e.g. {bad[0]}; minimum {labels.min()}, maximum {labels.max()})")
    return labels.astype(np.int64)
