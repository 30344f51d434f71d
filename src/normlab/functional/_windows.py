"""Sliding windows over the last two axes, and their adjoint: the two halves of im2col / col2im shared by
convolution and pooling.

`sliding_windows` is a view (no copy): the windows of a strided, unpadded scan. `fold_windows` is its
adjoint: it adds per-window values back onto the positions they were read from. Windows overlap when the
stride is smaller than the kernel, so the fold must accumulate; it does so one kernel offset at a time
(kh * kw strided-slice additions of a whole batch each), which is far faster than `np.add.at` scattering
element by element.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pair = tuple[int, int]


def as_pair(name: str, value, *, minimum: int) -> Pair:
    """An int or a pair of ints, each >= minimum, as a pair. Rejects floats and bools by name."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def output_size(size: Pair, kernel: Pair, stride: Pair) -> Pair:
    """Number of window positions along H and W for an (already padded) input of `size`."""
    return (size[0] - kernel[0]) // stride[0] + 1, (size[1] - kernel[1]) // stride[1] + 1


def sliding_windows(x: np.ndarray, kernel: Pair, stride: Pair) -> np.ndarray:
    """View of every kernel-sized window of x's last two axes, stepping by stride.

    Inputs:
    - x: (*lead, H, W), already padded.

    Returns a read-only view of shape (*lead, Ho, Wo, kh, kw).
    """
    windows = sliding_window_view(x, kernel, axis=(-2, -1))  # (*lead, H - kh + 1, W - kw + 1, kh, kw)
    return windows[..., :: stride[0], :: stride[1], :, :]


def fold_windows(patches: np.ndarray, size: Pair, stride: Pair) -> np.ndarray:
    """Adjoint of `sliding_windows`: sum every window's values back onto the input positions it covers.

    Inputs:
    - patches: (kh, kw, *lead, Ho, Wo), usually a transposed view; patches[i, j] is the value that kernel
      offset (i, j) of each window contributes.
    - size: (H, W) of the (padded) input the windows were taken from.
    - stride: the windows' stride.

    Returns an array of shape (*lead, H, W) in patches' dtype; positions no window covers are 0.
    """
    kh, kw, *lead, ho, wo = patches.shape
    out = np.zeros((*lead, *size), dtype=patches.dtype)  # (*lead, H, W)
    h_stop, w_stop = stride[0] * (ho - 1) + 1, stride[1] * (wo - 1) + 1
    for i in range(kh):
        for j in range(kw):
            out[..., i : i + h_stop : stride[0], j : j + w_stop : stride[1]] += patches[i, j]
    return out


def pad_spatial(x: np.ndarray, padding: Pair) -> np.ndarray:
    """Zero-pad the last two axes of x by padding = (ph, pw) on both sides."""
    ph, pw = padding
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)])
