"""Data files that lie: every loader checks sizes against the format before allocating, labels for dtype
and range, and names the file. One test per reported case (IDX sizes that overflow, a gzip bomb, negative
and float labels, CIFAR batches asking for huge or zero-stride arrays)."""

import gzip
import pickle
import struct
import tracemalloc

import numpy as np
import pytest

from normlab.data.cifar10 import read_batch
from normlab.data.datasets import read_idx_pair
from normlab.data.errors import DataFormatError, UnsafePickleError
from normlab.data.idx import read_idx, write_idx

try:
    from numpy._core import multiarray
except ImportError:  # NumPy 1
    from numpy.core import multiarray


def _idx_header(type_code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_sizes_whose_product_overflows_are_refused_naming_the_file(tmp_path, compress):
    """65536^4 = 2^64 wrapped to 0 in int64, so a header-only file passed as an empty array."""
    raw = _idx_header(0x08, (65536, 65536, 65536, 65536))
    path = tmp_path / "wrap.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(DataFormatError, match=r"wrap.idx: truncated: header says shape \(65536, 65536, 65536, 65536\)"):
        read_idx(path)


def test_a_gzip_bomb_is_stopped_at_the_declared_size(tmp_path):
    """A header declaring 10 bytes followed by 16 MB of zeros (16 KB gzipped): refused after inflating at
    most a header's worth, never holding the 16 MB (the reported bomb reached 2.1 GB before its error)."""
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(_idx_header(0x08, (10,)) + bytes(16 << 20)))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    with pytest.raises(DataFormatError, match="bomb.gz: has trailing bytes"):
        read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes"


def test_a_size_the_gzip_file_cannot_hold_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "claims.gz"
    path.write_bytes(gzip.compress(_idx_header(0x08, (1 << 31,)) + bytes(1000)))
    with pytest.raises(DataFormatError, match=r"claims.gz: truncated: .*more than \d+ gzipped bytes can hold"):
        read_idx(path)


def test_gzip_with_junk_after_the_stream_is_refused(tmp_path):
    path = tmp_path / "junk.gz"
    path.write_bytes(gzip.compress(_idx_header(0x08, (3,)) + b"abc") + b"junk")
    with pytest.raises(DataFormatError, match="junk.gz: has trailing bytes after the gzip stream"):
        read_idx(path)


def test_gzip_round_trip_still_reads(tmp_path):
    a = np.arange(1000, dtype=np.int32).reshape(10, 100)
    write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)


@pytest.mark.parametrize("labels, message", [
    (np.array([1, -1, 2, 3, 4], np.int8), r"labels.gz: labels must lie in \[0, 10\), got 1 outside it \(e.g. -1"),
    (np.array([1.0, 2.7, 3, 4, 5], np.float32), r"labels.gz: labels must be integers, got float32"),
    (np.array([1, 2, 3, 4, 300], np.int16), r"labels.gz: labels must lie in \[0, 10\).*maximum 300"),
])
def test_labels_must_be_integers_in_range(tmp_path, labels, message):
    """Negative test labels lowered the reported accuracy; float labels were truncated."""
    write_idx(tmp_path / "images.gz", np.zeros((5, 2, 2), np.uint8))
    write_idx(tmp_path / "labels.gz", labels)
    with pytest.raises(DataFormatError, match=message):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz")


class _Call:
    """Pickles as a call of `function` with `args` (a REDUCE), the way a hostile file would."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _batch(tmp_path, data, labels=None):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels or [0] * 4}, protocol=4))
    return path


@pytest.mark.parametrize("data, message", [
    (_Call(np.ndarray, ((1 << 40,), "u1")), "refusing to call numpy.ndarray directly"),
    (_Call(np.ndarray, ((4, 3072), "u1", b"x", 0, (0, 0))), "refusing to call numpy.ndarray directly"),
    (_Call(multiarray._reconstruct, (np.ndarray, (1 << 40,), b"b")),
     r"refusing numpy _reconstruct.*\(1099511627776,\)"),
    (_Call(np.dtype, ("(1000,1000)u1", False, True)), "refusing dtype"),
])
def test_cifar_batches_cannot_request_huge_or_zero_stride_arrays(tmp_path, data, message):
    with pytest.raises(UnsafePickleError, match="data_batch_1: " + message):
        read_batch(_batch(tmp_path, data))


@pytest.mark.parametrize("labels, message", [
    ([0, 1, -1, 2], r"labels must lie in \[0, 10\)"),
    ([0, 1, True, 2], "b'labels' must be a list of ints"),
])
def test_cifar_labels_are_checked(tmp_path, labels, message):
    with pytest.raises(DataFormatError, match=message):
        read_batch(_batch(tmp_path, np.zeros((4, 3072), np.uint8), labels))


def test_a_genuine_array_still_loads(tmp_path):
    data = np.arange(4 * 3072, dtype=np.uint8).reshape(4, 3072)
    images, labels = read_batch(_batch(tmp_path, data, [0, 1, 2, 3]))
    np.testing.assert_array_equal(images.reshape(4, -1), data)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])


def test_a_huge_memo_index_is_refused_before_unpickling(tmp_path):
    """Found by fuzzing: the C unpickler grows its memo to any index, so one LONG_BINPUT of 2^31 - 1 asked
    for 16 GB (MemoryError, or the memory itself)."""
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02}r\xff\xff\xff\x7f.")
    tracemalloc.start()
    with pytest.raises(DataFormatError, match=r"data_batch_1: not a readable pickle: memo index 2147483647"):
        read_batch(path)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()


def test_a_damaged_dtype_state_is_refused(tmp_path):
    """Found by fuzzing: one byte of a dtype's pickled state (its flags) made numpy raise SystemError and
    left a broken dtype behind. No state from the file reaches numpy's __setstate__ now."""
    from py2_pickle import cifar_batch

    raw = bytearray(cifar_batch(np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3, 32, 32) % 200, [3, 7]))
    raw[173] = 3
    path = tmp_path / "data_batch_1"
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsafePickleError, match=r"data_batch_1: refusing dtype state \(3, b'\|', None, None, None, "
                                                r"-1, -1, 3\): not a plain dtype's"):
        read_batch(path)


@pytest.mark.parametrize("order", ["C", "F"])
def test_arrays_are_rebuilt_from_their_own_bytes(tmp_path, order):
    """A genuine NumPy 2 pickle (protocol 4): float64 big-endian, Fortran order, and scalars come back equal."""
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4)) if order == "F" else np.arange(12.0).reshape(3, 4)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2], b"extra": a.astype(">f8"),
             b"scalar": np.float32(2.5)}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=4))
    from normlab.data.cifar10 import safe_load_pickle

    loaded = safe_load_pickle(path.read_bytes(), str(path))
    np.testing.assert_array_equal(loaded[b"extra"], a)
    assert loaded[b"extra"].dtype == np.dtype(">f8") and loaded[b"scalar"] == np.float32(2.5)
    assert read_batch(path)[1].tolist() == [1, 2]
