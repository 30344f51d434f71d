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
import math
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


_SIMPLE_KINDS = "biufc"  # bytes and strings (S, U) never pass the dtype state check below


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _PickledDtype:
    """numpy.dtype(spec, align, copy) as a pickle calls it, then BUILD with the dtype's state: both checked
    here and turned into a real dtype. numpy's own dtype __setstate__ took a damaged state into a broken
    dtype (SystemError, then "get_clear_loop not set" when the array was freed: found by fuzzing), so no
    state from the file ever reaches it."""

    def __init__(self, spec, align=False, copy=False):
        try:
            dtype = np.dtype(_text(spec))
        except (TypeError, ValueError) as e:
            raise UnsafePickleError(f"refusing dtype {spec!r}: {e}") from None
        if dtype.kind not in _SIMPLE_KINDS or dtype.fields is not None or dtype.subdtype is not None or \
                dtype.itemsize > 64:
            raise UnsafePickleError(f"refusing dtype {dtype}: only plain numbers")
        self.dtype = dtype

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and _text(state[1]) in ("<", ">", "|", "=") and all(v is None for v in state[2:5])
                and tuple(state[5:8]) == (-1, -1, self.dtype.flags)):
            raise UnsafePickleError(f"refusing dtype state {state!r}: not a plain dtype's")
        if _text(state[1]) in "<>":
            self.dtype = self.dtype.newbyteorder(_text(state[1]))


class _PickledArray:
    """An array as a pickle rebuilds it: _reconstruct(ndarray, (0,), ...) then BUILD with (version, shape,
    dtype, fortran order, bytes). The bytes must be exactly shape x itemsize; the array is built here with
    numpy.frombuffer, never by numpy's __setstate__ on a state from the file."""

    array: np.ndarray | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise UnsafePickleError(f"refusing array state of type {type(state).__name__}: not (1, shape, dtype, "
                                    "fortran, bytes)")
        _, shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise UnsafePickleError(f"refusing array shape {shape!r}")
        if not isinstance(dtype, _PickledDtype) or not isinstance(raw, bytes):
            raise UnsafePickleError("refusing array state: needs a plain dtype and the array's bytes")
        count = math.prod(shape)
        if len(raw) != count * dtype.dtype.itemsize:
            raise DataFormatError(f"array of shape {shape} and dtype {dtype.dtype} needs "
                                  f"{count * dtype.dtype.itemsize} bytes, the file holds {len(raw)}")
        flat = np.frombuffer(raw, dtype=dtype.dtype, count=count)
        self.array = flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


def _resolve(value):
    """The unpickled object with every _PickledArray / _PickledDtype replaced by the real thing."""
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise DataFormatError("an array without its data (no state after _reconstruct)")
        return value.array
    if isinstance(value, _PickledDtype):
        return value.dtype
    if isinstance(value, dict):
        return {_resolve(k): _resolve(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # exactly these: a pickle here names no other class
        return type(value)(_resolve(v) for v in value)
    return value


def _numpy_array_globals() -> dict[tuple[str, str], object]:
    """NumPy's array-reconstruction names as pickles spell them: numpy.core (NumPy 1, and every Python 2
    pickle) and numpy._core (NumPy 2). Each resolves to a stand-in of ours, never to an import of a name
    that came from the file: arrays and dtypes are rebuilt only from their own bytes (`_PickledArray`,
    `_PickledDtype`)."""

    def reconstruct(subtype, shape, dtype):
        if subtype is not _NdarrayName or tuple(shape) != (0,):
            raise UnsafePickleError(f"refusing numpy _reconstruct({getattr(subtype, '__name__', subtype)}, "
                                    f"{shape!r}): a pickled array starts empty, as numpy.ndarray of shape (0,)")
        return _PickledArray()

    def scalar(dtype, data=None):
        if not isinstance(dtype, _PickledDtype) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
            raise UnsafePickleError("refusing numpy scalar: needs a plain dtype and exactly its bytes")
        return np.frombuffer(data, dtype=dtype.dtype, count=1)[0]

    allowed = {("numpy", "ndarray"): _NdarrayName, ("numpy", "dtype"): _PickledDtype}
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
        return _resolve(SafeUnpickler(io.BytesIO(data), source=source).load())
    except (UnsafePickleError, DataFormatError) as e:
        if str(e).startswith(source):
            raise
        raise type(e)(f"{source}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, RecursionError, MemoryError) as e:
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
    data = np.ascontiguousarray(data)  # a Fortran-order array is as good once copied to row-major
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DataFormatError(f"{path}: b'labels' must be a list of ints, got {type(labels).__name__}")
    from normlab.data.datasets import check_labels  # datasets imports this module

    try:
        labels = np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise DataFormatError(f"{path}: labels must lie in [0, 10), got {max(labels, key=abs)}") from None
    if labels.shape != (data.shape[0],):
        raise DataFormatError(f"{path}: b'labels' must hold one label per image ({data.shape[0]}), "
                              f"got {labels.shape[0]}")
    labels = check_labels(path, labels, 10)
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
