"""Recycled arrays: large outputs and work buffers reuse the memory of earlier, dead ones instead of fresh
pages.

Why: memory fresh from the kernel is zeroed page by page on first touch. glibc hands allocations above its
mmap threshold (at most 32 MB) back to the kernel when they are freed, so a layer whose output is that
large pays the zeroing on every call, a large part of a memory-bound layer's time (docs/performance.md,
"Measurements behind design choices"). PyTorch's CPU tensors pay it too. A caching allocator, as PyTorch has on the GPU, avoids it.

How: `empty(shape, dtype)` returns a view of a pooled buffer. A buffer is free again when nothing but the
pool refers to it: NumPy views refer to the buffer that owns their memory directly, so `sys.getrefcount`
counts every live array made from it. A buffer some live array still uses is never handed out again, so
recycling cannot overwrite a result anyone holds. (Only raw pointers taken with `.ctypes.data` and kept past
their array's life escape this, as they escape NumPy's own memory management.)

Where: every array handed out starts on a cache line (ALIGN), and of the idle buffers of its size the one
handed out most recently is reused first, as malloc reuses its last freed block: its lines are the likeliest
to be still in cache.

Bounds: arrays under MIN_BYTES come from NumPy as usual (malloc reuses small blocks well). The pool holds at
most `NORMLAB_RECYCLE_BYTES` (default 1 GiB; 0 turns recycling off): past that, idle buffers are released,
least recently used first, and outputs that still do not fit come from NumPy. Sizes are rounded up to
ROUND_BYTES, so outputs of nearby sizes share buffers.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import OrderedDict

import numpy as np

ENV_VAR = "NORMLAB_RECYCLE_BYTES"
DEFAULT_LIMIT = 1 << 30
MIN_BYTES = 1 << 20
ROUND_BYTES = 1 << 21  # a huge page: NumPy asks the kernel for huge pages for large arrays
ALIGN = 64  # bytes: pooled arrays start on a cache line, so no 64-byte vector load or store of the compiled
#             kernels spans two lines (NumPy's own large arrays start 16 bytes past one; torch's start on
#             one). Each buffer holds ALIGN bytes more than it hands out.

_lock = threading.Lock()
_buffers: OrderedDict[int, np.ndarray] = OrderedDict()  # id -> uint8 buffer, least recently handed out first
_starts: dict[int, int] = {}  # id -> offset of the buffer's first cache line (`.ctypes` is slow with cold caches)


def limit() -> int:
    """The most bytes the pool may hold, from NORMLAB_RECYCLE_BYTES (read on every call)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return DEFAULT_LIMIT
    try:
        bytes_ = int(value)
    except ValueError:
        raise ValueError(f"environment variable {ENV_VAR} must be a whole number of bytes, got {value!r}") from None
    if bytes_ < 0:
        raise ValueError(f"environment variable {ENV_VAR} must be >= 0, got {value!r}")
    return bytes_


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous array of `shape` and `dtype` with undefined contents, like `np.empty`; large ones
    reuse the memory of a dead earlier output when there is one."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # not np.prod: far slower with the caches cold after a kernel
    if nbytes < MIN_BYTES or (cap := limit()) == 0:
        return np.empty(shape, dtype)
    size = -(-nbytes // ROUND_BYTES) * ROUND_BYTES
    with _lock:
        buffer = _idle(size)
        if buffer is None:
            buffer = _new(size, cap)
        else:
            _buffers.move_to_end(id(buffer))
    if buffer is None:
        return np.empty(shape, dtype)
    start = _starts[id(buffer)]
    return buffer[start : start + nbytes].view(dtype).reshape(shape)


def empty_like(x: np.ndarray) -> np.ndarray:
    """`empty(x.shape, x.dtype)`."""
    return empty(x.shape, x.dtype)


def zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """`empty(shape, dtype)` filled with zeros: a recycled buffer is zeroed in cache, where a fresh one
    from `np.zeros` of a few MB is zeroed page by page by the kernel on every call (the work buffers of
    the convolutions page-faulted 1650 times per call that way)."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def held_bytes() -> int:
    """Bytes the pool holds, in use or idle."""
    with _lock:
        return sum(_usable(buffer) for buffer in _buffers.values())


def release() -> None:
    """Forget every buffer; those still in use are freed when their last array dies."""
    with _lock:
        _buffers.clear()
        _starts.clear()


def _reference_counts(buffers: OrderedDict) -> list[int]:
    """sys.getrefcount of each buffer in `buffers`, taken the same way for the pool and for calibration."""
    return [sys.getrefcount(buffer) for buffer in buffers.values()]


def _is_idle(buffers: OrderedDict) -> list[bool]:
    """For each buffer in `buffers`, whether no array but the pool's entry refers to it."""
    return [count <= _OWN_REFERENCES for count in _reference_counts(buffers)]


def _own_references() -> int:
    """What `_reference_counts` reports for a buffer only the pool holds (the dict entry, the loop variable, the
    call's argument: 3 on CPython 3.11), measured rather than assumed."""
    buffers = OrderedDict(only=np.empty(1, np.uint8))
    return _reference_counts(buffers)[0]


_OWN_REFERENCES = _own_references()



def _usable(buffer: np.ndarray) -> int:
    """The bytes a pooled buffer hands out: all but the ALIGN bytes kept to start on a cache line."""
    return buffer.nbytes - ALIGN


def _idle(size: int) -> np.ndarray | None:
    """The idle buffer of exactly `size` bytes handed out most recently, or None: its lines are the likeliest
    to be still in cache, as malloc's last freed block's are."""
    return _latest_idle(_buffers, size + ALIGN, _OWN_REFERENCES_SCAN)


def _latest_idle(buffers: OrderedDict, nbytes: int, own: int) -> np.ndarray | None:
    """The last buffer of `nbytes` in `buffers` with a reference count of at most `own`, or None. It stops at
    the first match: `empty` runs between kernels, with the caches cold, where every step costs (this, math.prod
    for np.prod and stored starts for `.ctypes` more than halved a pooled `empty`: docs/performance.md)."""
    for buffer in reversed(buffers.values()):
        if buffer.nbytes == nbytes and sys.getrefcount(buffer) <= own:
            return buffer
    return None


def _own_references_scan() -> int:
    """What `_latest_idle` counts for a buffer only its dict holds, measured the same way: the smallest
    `own` at which it finds one."""
    alone = (own for own in range(1, 64) if _latest_idle(OrderedDict(only=np.empty(1, np.uint8)), 1, own) is not None)
    return next(alone)


_OWN_REFERENCES_SCAN = _own_references_scan()


def _new(size: int, cap: int) -> np.ndarray | None:
    """A new pooled buffer of `size` bytes after releasing idle ones to fit under `cap`, or None when even
    then it would not fit."""
    if size > cap:
        return None  # it could never fit: keep the idle buffers
    held = sum(_usable(buffer) for buffer in _buffers.values())
    idle_flags = _is_idle(_buffers)
    for key in [key for key, idle in zip(_buffers, idle_flags) if idle]:
        if held + size <= cap:
            break
        held -= _usable(_buffers.pop(key))
        del _starts[key]
    if held + size > cap:
        return None
    buffer = np.empty(size + ALIGN, np.uint8)  # the owner: every view handed out refers to it
    _buffers[id(buffer)] = buffer
    _starts[id(buffer)] = -buffer.ctypes.data % ALIGN
    return buffer
