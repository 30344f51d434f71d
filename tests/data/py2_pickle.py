"""Writes pickles as Python 2's cPickle wrote CIFAR-10's batches (protocol 2), for tests.

Python 3 cannot produce these with the pickle module: it writes bytes through `_codecs.encode`, where
Python 2 wrote its str type with the (SHORT_)BINSTRING opcodes, which Python 3 reads back as bytes under
encoding='bytes'. A NumPy array is written as NumPy 1 under Python 2 reduced it:

    numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')
    .__setstate__((1, shape, numpy.dtype('u1', 0, 1) with state (3, '|', None, None, None, -1, -1, 0),
                   False, raw bytes))
"""

from __future__ import annotations

import pickle as P
import struct

import numpy as np


def _str(b: bytes) -> bytes:
    if len(b) < 256:
        return P.SHORT_BINSTRING + bytes([len(b)]) + b
    return P.BINSTRING + struct.pack("<i", len(b)) + b


def _int(v: int) -> bytes:
    if 0 <= v < 256:
        return P.BININT1 + bytes([v])
    if 0 <= v < 65536:
        return P.BININT2 + struct.pack("<H", v)
    return P.BININT + struct.pack("<i", v)


def _global(module: str, name: str) -> bytes:
    return P.GLOBAL + f"{module}\n{name}\n".encode()


def _array(a: np.ndarray, numpy_module: str) -> bytes:
    if a.dtype != np.uint8:
        raise ValueError("this writer knows uint8 arrays only (CIFAR-10's)")
    out = _global(numpy_module, "_reconstruct") + _global("numpy", "ndarray")
    out += _int(0) + P.TUPLE1 + _str(b"b") + P.TUPLE3 + P.REDUCE
    dtype = _global("numpy", "dtype") + _str(b"u1") + _int(0) + _int(1) + P.TUPLE3 + P.REDUCE
    dtype += (P.MARK + _int(3) + _str(b"|") + P.NONE + P.NONE + P.NONE + P.BININT + struct.pack("<i", -1)
              + P.BININT + struct.pack("<i", -1) + _int(0) + P.TUPLE + P.BUILD)
    shape = P.MARK + b"".join(_int(d) for d in a.shape) + P.TUPLE
    return out + P.MARK + _int(1) + shape + dtype + P.NEWFALSE + _str(a.tobytes()) + P.TUPLE + P.BUILD


def _value(v, numpy_module: str) -> bytes:
    if isinstance(v, bytes):
        return _str(v)
    if isinstance(v, bool) or not isinstance(v, (int, list, dict, np.ndarray)):
        raise TypeError(f"cannot write {type(v).__name__}")
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, np.ndarray):
        return _array(v, numpy_module)
    if isinstance(v, list):
        return P.EMPTY_LIST + (P.MARK + b"".join(_value(x, numpy_module) for x in v) + P.APPENDS if v else b"")
    items = b"".join(_value(k, numpy_module) + _value(x, numpy_module) for k, x in v.items())
    return P.EMPTY_DICT + (P.MARK + items + P.SETITEMS if v else b"")


def dumps_py2(obj, numpy_module: str = "numpy.core.multiarray") -> bytes:
    """Protocol 2 pickle of dicts, lists, bytes (as Python 2 str), ints and uint8 arrays."""
    return P.PROTO + b"\x02" + _value(obj, numpy_module) + P.STOP


def cifar_batch(images: np.ndarray, labels: list[int], label: bytes = b"training batch 1 of 5",
                numpy_module: str = "numpy.core.multiarray") -> bytes:
    """A batch file's bytes for images (N, 3, 32, 32) uint8."""
    n = len(images)
    return dumps_py2({b"batch_label": label, b"labels": list(labels), b"data": images.reshape(n, 3072),
                      b"filenames": [f"img_{i}.png".encode() for i in range(n)]}, numpy_module)


LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def cifar_meta() -> bytes:
    return dumps_py2({b"num_cases_per_batch": 10000, b"label_names": LABEL_NAMES, b"num_vis": 3072})


def write_cifar_dir(directory, n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py/ with five training batches and a test batch of n images each. Returns all
    training images (5n, 3, 32, 32) and labels (5n,)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        (directory / name).write_bytes(cifar_batch(x, y))
        if name != "test_batch":
            xs.append(x)
            ys.extend(y)
    (directory / "batches.meta").write_bytes(cifar_meta())
    return np.concatenate(xs), np.array(ys)
