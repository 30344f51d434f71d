"""Fuzzing the loaders (bounded in time): mutated and random IDX files (raw and gzipped), CIFAR-10 batches
and checkpoints either load, within the size their file allows, or raise the loader's own error naming the
file; never another exception, a hang or an outsized allocation.

NORMLAB_FUZZ_EXAMPLES raises the number of examples per test for a longer run (docs/reliability.md).
"""

import gzip
import os
import struct

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from py2_pickle import cifar_batch

from normlab.data.cifar10 import read_batch
from normlab.data.errors import DataFormatError, UnsafePickleError
from normlab.data.idx import read_idx, write_idx
from normlab.train.checkpoint import load_tensors, save_tensors

EXAMPLES = int(os.environ.get("NORMLAB_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _idx_bytes(shape, dtype) -> bytes:
    a = (np.arange(int(np.prod(shape))) % 251).astype(dtype).reshape(shape)
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    return bytes([0, 0, codes[dtype], len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + \
        a.astype(np.dtype(dtype).newbyteorder(">")).tobytes()


def mutate(data: bytes, draw) -> bytes:
    """A few edits: flip, overwrite, insert or delete bytes, or truncate / extend."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


IDX_SEEDS = [_idx_bytes((3, 4, 5), np.uint8), _idx_bytes((7,), np.int16), _idx_bytes((2, 3), np.float64)]


def _check_idx(path, raw_size):
    try:
        a = read_idx(path)
    except DataFormatError as e:
        assert str(path) in str(e)
        event("refused")
        return
    assert a.nbytes <= raw_size  # never more than the (decompressed) file holds
    event("read")


@FUZZ
@given(data=st.data())
def test_fuzz_idx_files(tmp_path_factory, data):
    seed = data.draw(st.sampled_from(IDX_SEEDS))
    raw = mutate(seed, data.draw) if data.draw(st.booleans()) else data.draw(st.binary(max_size=64))
    path = tmp_path_factory.mktemp("idx") / "f.idx"
    compress = data.draw(st.booleans())
    path.write_bytes(gzip.compress(raw) if compress else raw)
    _check_idx(path, len(raw))


@FUZZ
@given(data=st.data())
def test_fuzz_gzip_streams(tmp_path_factory, data):
    """Mutations of the gzip stream itself (header, deflate data, CRC, length)."""
    raw = data.draw(st.sampled_from(IDX_SEEDS))
    path = tmp_path_factory.mktemp("gz") / "f.gz"
    path.write_bytes(b"\x1f\x8b" + mutate(gzip.compress(raw)[2:], data.draw))
    _check_idx(path, 1 << 20)


def test_genuine_idx_round_trips(tmp_path):
    write_idx(tmp_path / "a.gz", np.arange(12, dtype=np.int32).reshape(3, 4))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), np.arange(12).reshape(3, 4))


CIFAR_SEED = cifar_batch(np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3, 32, 32) % 200, [3, 7])


@FUZZ
@given(data=st.data())
def test_fuzz_cifar_batches(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cifar") / "data_batch_1"
    path.write_bytes(mutate(CIFAR_SEED, data.draw))
    try:
        x, y = read_batch(path)
    except (DataFormatError, UnsafePickleError) as e:
        assert str(path) in str(e)
        event(f"refused: {type(e).__name__}")
        return
    event("read")
    assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and y.dtype == np.int64
    assert len(x) == len(y) and x.nbytes <= len(CIFAR_SEED) + 64 and ((y >= 0) & (y < 10)).all()


CHECKPOINT_ARRAYS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, np.int64)}


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoints(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("ckpt")
    save_tensors(directory / "c.safetensors", CHECKPOINT_ARRAYS, {"epochs_done": 1})
    raw = (directory / "c.safetensors").read_bytes()
    (directory / "c.safetensors").write_bytes(mutate(raw, data.draw))
    try:
        arrays, meta = load_tensors(directory / "c.safetensors")
    except ValueError as e:
        assert str(directory / "c.safetensors") in str(e)
        event("refused")
        return
    event("read")
    assert isinstance(meta, dict) and sum(a.nbytes for a in arrays.values()) <= len(raw)
