"""The run's history as CSV beside history.json, and TensorBoard event files (`--tensorboard`)."""

import csv
import json
import math
import struct

import numpy as np
import pytest
from optional import require

from normlab.train.config import TrainConfig
from normlab.train.history import EpochRecord, History, save_history
from normlab.train.run import run_training


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_history_csv_has_one_row_per_epoch_and_iterations_csv_one_per_step(tmp_path):
    history = History(loss=[2.5, 2.0, 1.5, 1.25, 1.0], lr=[0.1, 0.1, 0.05, 0.05, 0.01],
                      epochs=[EpochRecord(1, 2.0, 0.5, None, 0.05, 1.5, 0.25),
                              EpochRecord(2, 1.1, 0.75, 0.625, 0.01, 1.25, 0.125)], test_acc=0.7)
    save_history(tmp_path, history, steps_per_epoch=3)
    epochs = read_csv(tmp_path / "history.csv")
    assert list(epochs[0]) == ["epoch", "train_loss", "train_acc", "val_acc", "lr", "seconds", "eval_seconds"]
    assert epochs[0]["val_acc"] == "" and float(epochs[1]["val_acc"]) == 0.625
    assert [float(r["train_loss"]) for r in epochs] == [2.0, 1.1]  # repr: float64 round-trips exactly
    steps = read_csv(tmp_path / "iterations.csv")
    assert [(r["iteration"], r["epoch"], r["step"]) for r in steps] == [
        ("1", "1", "1"), ("2", "1", "2"), ("3", "1", "3"), ("4", "2", "1"), ("5", "2", "2")]
    assert [float(r["loss"]) for r in steps] == history.loss and [float(r["lr"]) for r in steps] == history.lr
    assert History.from_dict(json.loads((tmp_path / "history.json").read_text())) == history


def tensorboard_scalars(log_dir):
    """{tag: [(step, value)]} from the TFRecord event files in log_dir, read with tensorboardX's protobuf
    classes, every record's length and data checked against its masked CRC-32C."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    scalars = {}
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[pos + 8:pos + 12])
            assert length_crc == masked_crc32c(header)
            record = data[pos + 12:pos + 12 + length]
            assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(record)
            pos += 16 + length
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_event_files_hold_the_history(toy_fashion, tmp_path):
    require("tensorboardX", "tensorboard")
    config = TrainConfig(model_options={"hidden_dims": (16,)}, epochs=2, batch_size=64)
    result = run_training(config, tmp_path / "run", data_dir=toy_fashion, download=False, progress=False,
                          log=lambda line: None, tensorboard=True)
    assert result.status == "completed"
    scalars = tensorboard_scalars(tmp_path / "run" / "tensorboard")
    history = result.history
    assert [s for s, _ in scalars["iteration/loss"]] == list(range(1, len(history.loss) + 1))
    np.testing.assert_allclose([v for _, v in scalars["iteration/loss"]], history.loss, rtol=1e-6)  # float32
    np.testing.assert_allclose([v for _, v in scalars["epoch/val_acc"]], [e.val_acc for e in history.epochs],
                               rtol=1e-6)
    assert [s for s, _ in scalars["epoch/train_acc"]] == [1, 2]
    assert scalars["test/accuracy"] == [(2, pytest.approx(result.test_acc, rel=1e-6))]
    rows = read_csv(tmp_path / "run" / "history.csv")
    assert [float(r["val_acc"]) for r in rows] == [e.val_acc for e in history.epochs]
    assert math.isclose(json.loads((tmp_path / "run" / "history.json").read_text())["test_acc"], result.test_acc)


def test_tensorboard_without_tensorboardx_says_what_to_install(toy_fashion, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if it were not installed
    config = TrainConfig(model_options={"hidden_dims": (4,)}, epochs=1, limit=50)
    with pytest.raises(ImportError, match=r'needs tensorboardX: pip install "normlab\[tensorboard\]"'):
        run_training(config, tmp_path / "run", data_dir=toy_fashion, download=False, progress=False,
                     log=lambda line: None, tensorboard=True)
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_resumed_run_opens_its_event_file_with_a_purge_at_its_first_step(toy_fashion, tmp_path):
    """TensorBoard drops the earlier files' events from a SessionLog START's step on: the steps a killed run
    logged after its last checkpoint are not shown twice."""
    require("tensorboardX", "tensorboard")
    from tensorboardX.proto import event_pb2

    config = TrainConfig(model_options={"hidden_dims": (16,)}, epochs=1, batch_size=64)
    kwargs = {"data_dir": toy_fashion, "download": False, "progress": False, "log": lambda line: None,
              "tensorboard": True}
    assert run_training(config, tmp_path / "run", max_steps=3, **kwargs).status == "paused"
    assert run_training(config, tmp_path / "run", resume=True, **kwargs).status == "completed"
    first, second = sorted((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    starts = [e.step for e in map(event_pb2.Event.FromString, _records(second))
              if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
    assert starts == [4]
    assert not any(e.HasField("session_log") for e in map(event_pb2.Event.FromString, _records(first)))


def _records(path):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        yield data[pos + 12:pos + 12 + length]
        pos += 16 + length
