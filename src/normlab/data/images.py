"""Reading images from files for a trained model (`normlab predict`): .npy arrays and .png pictures.

A file holds one image or, for .npy, a batch of them, in the layout the datasets use, (C, H, W), or
channels-last (H, W, C), or (H, W) for one channel. Values are uint8 in 0..255, or floats in [0, 1] (what
`Standardizer` expects; other integer types are accepted within 0..255). Nothing is resized or rescaled
silently: a wrong size, layout or range is an error that names the file, the expected and the actual.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from normlab.data.errors import DataFormatError

IMAGE_SUFFIXES = (".npy", ".png")


def read_images(path: str | os.PathLike, input_shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """The images in one file as a batch.

    Inputs:
    - path: a .npy file (one image or a batch) or a .png file (one image; converted to grayscale or RGB
      to match input_shape's channels).
    - input_shape: one image's (C, H, W), as the model was trained on.
    Returns (images, batched): images (N, C, H, W), uint8 or float32 in [0, 1]; batched is True when the
    file holds a batch (N = 1 included) rather than one image. Raises DataFormatError naming the file.
    """
    path = Path(path)
    c, h, w = (int(d) for d in input_shape)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataFormatError(f"{path}: expected a .npy or .png file, got {path.suffix or 'no suffix'!r}")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    array = _read_png(path, (c, h, w)) if path.suffix.lower() == ".png" else _read_npy(path)
    batch, batched = _as_batch(path, array, (c, h, w))
    return _checked_values(path, batch), batched


def _read_npy(path: Path) -> np.ndarray:
    try:
        _check_npy_header(path)
        loaded = np.load(path, allow_pickle=False)
    except MemoryError:
        raise DataFormatError(f"{path}: the .npy header declares an array too large to load") from None
    except (ValueError, OSError, EOFError) as error:
        raise DataFormatError(f"{path}: not a readable .npy array ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):  # np.load reads any zip file as a .npz archive
        loaded.close()
        raise DataFormatError(f"{path}: a zip (.npz) archive, not a .npy array")
    return loaded


def _check_npy_header(path: Path) -> None:
    """Refuse a .npy file whose header declares more data than the file holds, before anything is
    allocated (a few bytes can claim a terabyte array). Files that are not .npy (1.0 or 2.0) headers are
    left to np.load."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
            return
        f.seek(0)
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(f))
        if read_header is None:
            return
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            return  # refused by np.load (allow_pickle=False)
        held = os.fstat(f.fileno()).st_size - f.tell()
    declared = dtype.itemsize * int(np.prod(shape, dtype=object))
    if declared > held:
        raise DataFormatError(f"{path}: the .npy header declares an array of shape {shape} and dtype {dtype} "
                              f"({declared:,} bytes), the file holds {held:,} bytes of data")


def _read_png(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib

    channels, h, w = shape
    try:
        with Image.open(path) as image:  # reads the header only
            if image.size != (w, h):  # before decoding: a small file may declare a huge picture
                raise DataFormatError(f"{path}: expected one image of {h}x{w} pixels (height x width), got shape "
                                      f"({image.size[1]}, {image.size[0]})")
            if image.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):
                raise DataFormatError(f"{path}: PNG mode {image.mode!r} is not supported (8-bit gray or RGB)")
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))  # (H, W) or (H, W, 3) uint8
    except Image.DecompressionBombError as error:
        raise DataFormatError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataFormatError(f"{path}: not a readable PNG image ({error})") from None
    if channels not in (1, 3):
        raise DataFormatError(f"{path}: a PNG gives 1 or 3 channels, the model takes {channels}")
    return pixels


def _as_batch(path: Path, a: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    c, h, w = shape
    accepted = [shape, (h, w, c)] + ([(h, w)] if c == 1 else [])  # one image's layouts
    batched = a.shape not in accepted
    batch = a if batched else a[None]
    if batch.shape[1:] == shape:
        return batch, batched
    if batch.shape[1:] == (h, w, c):
        return batch.transpose(0, 3, 1, 2), batched
    if c == 1 and batch.shape[1:] == (h, w):
        return batch[:, None], batched
    text = ", ".join(map(str, accepted))
    raise DataFormatError(f"{path}: expected one image of shape {text} (or a batch (N, ...) of them in a .npy), "
                          f"got shape {a.shape}")


def _checked_values(path: Path, a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.size == 0:
        raise DataFormatError(f"{path}: holds no images (shape {a.shape})")
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise DataFormatError(f"{path}: integer pixels must be in 0..255, got {a.min()}..{a.max()}")
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise DataFormatError(f"{path}: holds NaN or infinite values")
        if a.min() < 0 or a.max() > 1:
            raise DataFormatError(f"{path}: float pixels must be in [0, 1] (uint8 for 0..255), got "
                                  f"{a.min():g}..{a.max():g}")
        return a.astype(np.float32)
    raise DataFormatError(f"{path}: pixels must be uint8, integers or floats, got dtype {a.dtype}")
