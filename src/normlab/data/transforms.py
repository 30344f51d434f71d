"""Preparing image arrays for training: a train/validation split, per-channel standardization, and the
standard augmentations (random crop with zero padding, horizontal flip). Every random choice comes from
an explicit numpy.random.Generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.checks import check_non_negative_int, check_probability


def train_val_split(x: np.ndarray, y: np.ndarray, val_size: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle (x, y) together and hold out `val_size` examples for validation.

    Inputs: x (N, ...), y (N,), 0 <= val_size < N.
    Returns (x_train, y_train, x_val, y_val) with N - val_size and val_size examples.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y must have the same number of examples, got {n} and {len(y)}")
    if not isinstance(val_size, (int, np.integer)) or not 0 <= val_size < n:
        raise ValueError(f"val_size must be an integer in [0, {n}) for {n} examples, got {val_size!r}")
    order = rng.permutation(n)
    val, train = order[:val_size], order[val_size:]
    return x[train], y[train], x[val], y[val]


@dataclass(frozen=True)
class Standardizer:
    """Per-channel standardization with statistics from the training images only (so validation and
    test data tell the model nothing): out = (x / 255 - mean) / std for uint8 images."""

    mean: np.ndarray  # (C,) float64, of the images scaled to [0, 1]
    std: np.ndarray  # (C,) float64

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """x: (N, C, H, W) images, uint8 (scaled to [0, 1] first) or float."""
        if x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W) images, got shape {x.shape}")
        scale = 1.0 / 255 if x.dtype == np.uint8 else 1.0
        # Accumulated in float64, one channel at a time: a float32 sum of 47M pixels would lose digits.
        mean = np.array([x[:, c].mean(dtype=np.float64) for c in range(x.shape[1])]) * scale
        var = np.array([np.square(x[:, c] * scale - m, dtype=np.float64).mean() for c, m in enumerate(mean)])
        return cls(mean, np.sqrt(np.maximum(var, 1e-12)))

    def __call__(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Returns x standardized, (N, C, H, W) in `dtype`."""
        if x.ndim != 4 or x.shape[1] != self.mean.size:
            raise ValueError(f"x must be (N, {self.mean.size}, H, W) images, got shape {x.shape}")
        scale = 1.0 / 255 if x.dtype == np.uint8 else 1.0
        a = (scale / self.std).astype(dtype).reshape(1, -1, 1, 1)
        b = (-self.mean / self.std).astype(dtype).reshape(1, -1, 1, 1)
        out = x.astype(dtype)
        out *= a
        out += b
        return out


def random_crop(x: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad each image by `padding` pixels on every side and cut out a random window of the original
    size (one offset per image).

    Inputs: x (N, C, H, W); padding >= 0. Returns a new (N, C, H, W) array of x's dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W) images, got shape {x.shape}")
    check_non_negative_int("padding", padding)
    n, _, h, w = x.shape
    if padding == 0:
        return x.copy()
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # (N, C, H+2p, W+2p)
    top = rng.integers(0, 2 * padding + 1, size=n)  # (N,)
    left = rng.integers(0, 2 * padding + 1, size=n)  # (N,)
    rows = top[:, None] + np.arange(h)  # (N, H)
    cols = left[:, None] + np.arange(w)  # (N, W)
    batch = np.arange(n)[:, None, None]
    # Advanced indices around the channel slice move to the front: (N, H, W, C).
    crops = padded.transpose(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))


def random_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left to right with probability p. Returns a new (N, C, H, W) array."""
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W) images, got shape {x.shape}")
    check_probability("p", p)
    flip = rng.random(len(x)) < p  # (N,)
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


@dataclass(frozen=True)
class Augment:
    """The standard augmentation of CIFAR-style training: random crop with `padding`, then a horizontal
    flip with probability `flip`. Called as augment(x, rng) on each training batch."""

    padding: int = 4
    flip: float = 0.5

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return random_flip(random_crop(x, self.padding, rng), rng, self.flip)
