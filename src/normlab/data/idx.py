"""The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), optionally gzipped.

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions, d
    then        d sizes, big-endian uint32
    then        the elements, big-endian, in row-major order
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from normlab.data.errors import DataFormatError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not: decided by its first two bytes, not its name).

    Returns the array in native byte order with the file's shape, e.g. (60000, 28, 28) uint8 images or
    (60000,) uint8 labels. Raises DataFormatError naming the file for a wrong magic number, an unknown
    element type, or a file shorter or longer than its header says.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataFormatError(f"{path}: truncated or corrupted gzip data ({e})") from None
    if len(raw) < 4:
        raise DataFormatError(f"{path}: too short for an IDX header (4 bytes), got {len(raw)} bytes")
    zero, type_code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or type_code not in IDX_TYPES:
        raise DataFormatError(
            f"{path}: not an IDX file: magic number must be 00 00 <type> <ndim> with type one of "
            f"{', '.join(f'{t:#04x}' for t in IDX_TYPES)}, got {raw[:4].hex(' ')}"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataFormatError(f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, "
                              f"got {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataFormatError(f"{path}: {problem}: header says shape {shape} of {dtype.name} "
                              f"({expected} bytes in all), the file holds {len(raw)} bytes")
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write `array` as an IDX file; gzipped when `compress` is True (default: when the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"array dtype must be one of {sorted(str(d) for d in codes)}, got {array.dtype}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.dtype(IDX_TYPES[codes[native]])).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
