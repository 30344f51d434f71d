"""CIFAR-10's "python version" (https://www.cs.toronto.edu/~kriz/cifar.html), read without executing
anything.

The archive cifar-10-python.tar.gz holds cifar-10-batches-py/ with data_batch_1 ... data_batch_5,
test_batch and batches.meta. Each batch is a pickle written by Python 2 (protocol 2): a dict with bytes
keys

    b'data'         uint8 ndarray (10000, 3072): per row 1024 red, 1024 green, 1024 blue values of a
                    32x32 image, each plane in row-major order
    b'labels'       list of 10000 ints in [0, 10)
    b'batch_label'  bytes
    b'filenames'    list of bytes

and batches.meta a dict with b'label_names' (list of 10 bytes). Such pickles load with encoding='bytes'.
A pickle can name any Python callable, so loading one from an untrusted download executes arbitrary
code; `SafeUnpickler` resolves only the globals this format needs and refuses every other one.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np

from normlab.data.errors import DataFormatError, UnsafePickleError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)


class _NdarrayName:
    """Stands for numpy.ndarray inside a pickle: the argument `_reconstruct` is given, never a constructor.

    Calling numpy.ndarray directly would let a file ask for any shape, strides and buffer (a 2^40-element
    allocation, or a zero-stride array that repeats one byte as a whole batch)."""

    def __new__(cls, *args, **kwargs):
        raise UnsafePickleError("refusing to call numpy.ndarray directly: arrays in a CIFAR-10 batch are "
                                "rebuilt from their own bytes only")


_SIMPLE_KINDS = "biufcSUO"


def _numpy_array_globals() -> dict[tuple[str, str], object]:
    """NumPy's array-reconstruction callables under the module names pickles use: numpy.core (NumPy 1,
    and every Python 2 pickle) and numpy._core (NumPy 2). Resolved here, never by importing a name that
    came from the file, and wrapped so that they only rebuild what a pickled array holds: an empty array
    of a plain dtype, then filled from the file's bytes (numpy checks that the bytes match the shape)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray

    def reconstruct(subtype, shape, dtype):
        if subtype is not _NdarrayName or tuple(shape) != (0,):
            raise UnsafePickleError(f"refusing numpy _reconstruct({getattr(subtype, '__name__', subtype)}, "
                                    f"{shape!r}): a pickled array starts empty, as numpy.ndarray of shape (0,)")
        return multiarray._reconstruct(np.ndarray, (0,), plain_dtype(dtype))

    def plain_dtype(spec, align=False, copy=False):
        dtype = np.dtype(spec, align=bool(align), copy=bool(copy))  # copy=True: byte order set by BUILD
        if dtype.kind not in _SIMPLE_KINDS or dtype.fields is not None or dtype.subdtype is not None or \
                dtype.itemsize > 64:
            raise UnsafePickleError(f"refusing dtype {dtype}: only plain numbers, bytes and strings")
        return dtype

    def scalar(dtype, data=None):
        return multiarray.scalar(plain_dtype(dtype), data) if data is not None else multiarray.scalar(dtype)

    allowed = {("numpy", "ndarray"): _NdarrayName, ("numpy", "dtype"): plain_dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data: dicts, lists, tuples, bytes, strings, numbers, None, booleans, and NumPy
    arrays, dtypes and scalars. Any other global (a function, a class, a module attribute) raises
    UnsafePickleError before it is looked up, so it never runs."""

    ALLOWED = _numpy_array_globals()

    def __init__(self, file, *, source: str = "<bytes>"):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load {module}.{name}: a CIFAR-10 batch holds only dicts, lists, "
                "bytes, strings, numbers and NumPy arrays, so this file is not one (and was not executed)"
            ) from None


_MEMO_OPCODES = ("PUT", "BINPUT", "LONG_BINPUT")


def _check_opcodes(data: bytes, source: str) -> None:
    """Read the opcodes without running them (pickletools): every memo index must be one a real pickle
    could have reached (at most the number of opcodes so far). The C unpickler grows its memo to any index
    it is given, so one LONG_BINPUT of 2^31 asked for 16 GB (found by fuzzing)."""
    try:
        for count, (opcode, arg, position) in enumerate(pickletools.genops(data), start=1):
            if opcode.name in _MEMO_OPCODES and not (isinstance(arg, int) and 0 <= arg <= count):
                raise DataFormatError(f"{source}: not a readable pickle: memo index {arg!r} at byte {position} "
                                      f"after {count} opcodes")
    except (ValueError, EOFError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{source}: not a readable pickle (truncated or corrupted): {e}") from None


def safe_load_pickle(data: bytes, source: str = "<bytes>"):
    """Unpickle `data` with SafeUnpickler; a truncated or corrupted pickle raises DataFormatError."""
    _check_opcodes(data, source)
    try:
        return SafeUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError as e:
        if str(e).startswith(source):
            raise
        raise UnsafePickleError(f"{source}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, RecursionError, MemoryError, SystemError) as e:  # SystemError: numpy on a bad dtype state
        raise DataFormatError(f"{source}: not a readable pickle (truncated or corrupted): "
                              f"{type(e).__name__}: {e}") from None


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file.

    Returns (images, labels): images (N, 3, 32, 32) uint8, labels (N,) int64.
    Raises DataFormatError naming the file and the field when the content is not a CIFAR-10 batch.
    """
    path = Path(path)
    batch = safe_load_pickle(path.read_bytes(), str(path))
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: a CIFAR-10 batch must be a dict, got {type(batch).__name__}")
    for key in (b"data", b"labels"):
        if key not in batch:
            raise DataFormatError(f"{path}: a CIFAR-10 batch needs the key {key!r}, got keys {sorted(batch)}")
    data, labels = batch[b"data"], batch[b"labels"]
    pixels = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
        raise DataFormatError(f"{path}: b'data' must be a uint8 array of shape (N, {pixels}), got "
                              f"{getattr(data, 'dtype', type(data).__name__)} of shape {getattr(data, 'shape', None)}")
    if any(stride <= 0 for stride in data.strides) or not data.flags.c_contiguous:
        raise DataFormatError(f"{path}: b'data' must be a contiguous array, got strides {data.strides}")
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DataFormatError(f"{path}: b'labels' must be a list of ints, got {type(labels).__name__}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataFormatError(f"{path}: b'labels' must hold one label per image ({data.shape[0]}), "
                              f"got {labels.shape[0]}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels must lie in [0, 10), got values in [{labels.min()}, {labels.max()}]")
    # Each row is the red plane, then green, then blue, each 32 rows of 32: exactly (3, 32, 32) row-major.
    return data.reshape(-1, *IMAGE_SHAPE), labels


def read_label_names(path: str | os.PathLike) -> list[str]:
    """The 10 class names from batches.meta."""
    path = Path(path)
    meta = safe_load_pickle(path.read_bytes(), str(path))
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataFormatError(f"{path}: batches.meta must be a dict with b'label_names', a list of names")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def read_cifar10(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read cifar-10-batches-py/. Returns (x_train (50000, 3, 32, 32) uint8, y_train (50000,) int64,
    x_test, y_test, class names)."""
    directory = Path(directory)
    train = [read_batch(directory / name) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(directory / TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test, read_label_names(directory / META)
