"""Checkpoint files: safetensors round trips (0-d arrays included), metadata, atomic replacement."""

import os

import numpy as np
import pytest

from normlab.files import atomic_file, atomic_write_bytes
from normlab.models import FullyConnectedNet
from normlab.train import load_model, load_tensors, save_model, save_tensors


def test_tensors_and_metadata_round_trip(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(7, np.int64),
              "t": np.ones((3, 2), np.float64).T}  # not contiguous
    meta = {"state": {"state": 2**127 + 5, "inc": 3}, "lr": 0.1 + 0.2}
    save_tensors(tmp_path / "c.safetensors", arrays, meta)
    back, meta_back = load_tensors(tmp_path / "c.safetensors")
    assert meta_back == meta  # big ints and floats exactly
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v)


def test_model_files_hold_pytorch_names_and_no_pickle(tmp_path, rng):
    net = FullyConnectedNet(4, (3,), 2, normalization="batch", rng=rng)
    save_model(tmp_path / "m.safetensors", net, {"epoch": 1})
    raw = (tmp_path / "m.safetensors").read_bytes()
    assert b"running_var" in raw and b"num_batches_tracked" in raw and b"\x80\x02" not in raw[:8]
    other = FullyConnectedNet(4, (3,), 2, normalization="batch", rng=np.random.default_rng(9))
    assert load_model(tmp_path / "m.safetensors", other) == {"epoch": 1}
    for k, v in net.state_dict().items():
        assert np.array_equal(other.state_dict()[k], v)


def test_torch_reads_the_model_file(tmp_path, rng):
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    net = FullyConnectedNet(4, (3,), 2, normalization="batch", rng=rng)
    save_model(tmp_path / "m.safetensors", net)
    tensors = load_file(tmp_path / "m.safetensors")
    assert tensors["2.num_batches_tracked"].shape == () and tensors["1.weight"].shape == (3, 4)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "checkpoint.safetensors"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_atomic_files_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0o600


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_tensors(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        load_tensors(tmp_path / "bad.safetensors")
