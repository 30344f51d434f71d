"""The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), optionally gzipped.

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions, d
    then        d sizes, big-endian uint32
    then        the elements, big-endian, in row-major order
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from normlab.data.errors import DataFormatError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


_MAX_HEADER = 4 + 4 * 255  # the longest header: 255 dimensions
_DEFLATE_MAX_RATIO = 1100  # deflate expands at most about 1032:1, so a larger claimed size is a lie


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not: decided by its first two bytes, not its name).

    Returns the array in native byte order with the file's shape, e.g. (60000, 28, 28) uint8 images or
    (60000,) uint8 labels. Raises DataFormatError naming the file for a wrong magic number, an unknown
    element type, or a file shorter or longer than its header says.

    Nothing is allocated before the header is checked against the file: a gzip stream is decompressed only
    as far as its header's size (a "gzip bomb" stops there), and a size the compressed file could not hold
    is refused before decompressing.
    """
    path = Path(path)
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not compressed:
            return _parse(path, f.read(_MAX_HEADER), f.read, file_size=os.fstat(f.fileno()).st_size)
        inflater = _GzipMembers(path, f.read())
    return _parse(path, inflater.read(_MAX_HEADER), inflater.read, inflater=inflater)


class _GzipMembers:
    """The decompressed bytes of a gzip file, read a bounded number at a time, across its members: a gzip
    file may be several gzip streams one after the other (`cat a.gz b.gz`, some compressors write it so),
    and decompresses to their concatenation."""

    def __init__(self, path: Path, raw: bytes):
        self.path = path
        self.size = len(raw)
        self.member = zlib.decompressobj(wbits=31)  # gzip framing; output bounded by every call's max_length
        self.pending = raw  # compressed bytes not yet given to self.member

    def read(self, n: int) -> bytes:
        """At most n more decompressed bytes (fewer only where the data ends)."""
        parts = []
        try:
            while n > 0:
                data = self.member.decompress(self.pending, n)
                self.pending = self.member.unconsumed_tail
                parts.append(data)
                n -= len(data)
                if self.member.eof:
                    if not self.member.unused_data.startswith(_GZIP_MAGIC):
                        break  # the end, or trailing bytes that are no gzip member (_check_gzip_end says so)
                    self.pending = self.member.unused_data  # the next member
                    self.member = zlib.decompressobj(wbits=31)
                elif not data:
                    break  # every compressed byte consumed and the member not ended: truncated
        except zlib.error as e:
            raise DataFormatError(f"{self.path}: truncated or corrupted gzip data ({e})") from None
        return b"".join(parts)


def _parse(path: Path, head: bytes, rest, *, file_size: int | None = None, inflater: _GzipMembers | None = None):
    """Check the header in `head` (the first bytes), then read exactly the payload it declares through
    `rest(n)` (at most n more bytes), refusing sizes the file (of `file_size` bytes, or gzipped in
    `inflater`) cannot hold before allocating them."""
    if len(head) < 4:
        raise DataFormatError(f"{path}: too short for an IDX header (4 bytes), got {len(head)} bytes")
    zero, type_code, ndim = head[:2], head[2], head[3]
    if zero != b"\x00\x00" or type_code not in IDX_TYPES:
        raise DataFormatError(
            f"{path}: not an IDX file: magic number must be 00 00 <type> <ndim> with type one of "
            f"{', '.join(f'{t:#04x}' for t in IDX_TYPES)}, got {head[:4].hex(' ')}"
        )
    header_size = 4 + 4 * ndim
    if len(head) < header_size:
        raise DataFormatError(f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, "
                              f"got {len(head)}")
    shape = struct.unpack(f">{ndim}I", head[4:header_size])
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = header_size + math.prod(shape) * dtype.itemsize  # Python integers: no wrap-around
    says = f"header says shape {shape} of {dtype.name} ({expected} bytes in all)"
    if file_size is not None and file_size != expected:
        problem = "truncated" if file_size < expected else "has trailing bytes"
        raise DataFormatError(f"{path}: {problem}: {says}, the file holds {file_size} bytes")
    if inflater is not None and expected > inflater.size * _DEFLATE_MAX_RATIO + _MAX_HEADER:
        raise DataFormatError(f"{path}: truncated: header says shape {shape} of {dtype.name} ({expected} bytes), "
                              f"more than {inflater.size} gzipped bytes can hold")
    if len(head) > expected:
        raise DataFormatError(f"{path}: has trailing bytes: {says}, the file holds more")
    payload = head[header_size:] + rest(expected - len(head))
    if inflater is not None:
        _check_gzip_end(path, inflater, len(payload) == expected - header_size)
    if len(payload) != expected - header_size:
        raise DataFormatError(f"{path}: truncated: {says}, the file holds {header_size + len(payload)} bytes")
    data = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _check_gzip_end(path: Path, inflater: _GzipMembers, complete: bool) -> None:
    """After the declared payload, the gzip stream must end: no more data, a valid trailer, nothing after."""
    if complete and inflater.read(1):
        raise DataFormatError(f"{path}: has trailing bytes: the gzip stream holds more than its IDX header says")
    member = inflater.member  # the last one
    if not member.eof:
        raise DataFormatError(f"{path}: truncated or corrupted gzip data (the stream ends early)")
    if member.unused_data:
        raise DataFormatError(f"{path}: has trailing bytes after the gzip stream ({len(member.unused_data)} bytes)")


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
