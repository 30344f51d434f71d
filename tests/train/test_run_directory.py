"""Run directories are never silently wrong: a new run does not land on an earlier one, a checkpoint says
what it depends on and a resume with other settings or data is refused naming the difference, damaged
position fields are refused, non-finite weights are never saved as the last good checkpoint, stale
temporary files are cleaned, and a run killed with SIGKILL resumes bit-identically."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from normlab.cli import main
from normlab.data.idx import read_idx, write_idx
from normlab.train import load_tensors
from normlab.train.checkpoint import save_tensors
from normlab.train.config import TrainConfig
from normlab.train.run import RunDirectoryError, run_training
from normlab.train.trainer import CHECKPOINT

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _config(**fields):
    return TrainConfig(**{"model_options": {"hidden_dims": (16,)}, "epochs": 2, "batch_size": 32, **fields})


def _run(config, run_dir, data, **kwargs):
    return run_training(config, run_dir, data_dir=data, download=False, progress=False, log=lambda s: None, **kwargs)


def test_a_new_run_refuses_an_existing_one_unless_overwrite(toy_fashion, tmp_path):
    """The reported case: --out at an existing run overwrote it, and a diverging second run then called
    the first run's checkpoint its last good one."""
    first = _run(_config(), tmp_path / "run", toy_fashion)
    assert first.status == "completed"
    before = (tmp_path / "run" / CHECKPOINT).read_bytes()
    message = r"run already holds a run's files \(config.json, .*checkpoint.safetensors.*\); resume it, choose"
    with pytest.raises(RunDirectoryError, match=message + " another directory, or overwrite it"):
        _run(_config(seed=1), tmp_path / "run", toy_fashion)
    assert (tmp_path / "run" / CHECKPOINT).read_bytes() == before
    # overwrite: the earlier run's files go first, so none of them can be taken for the new run's
    paused = _run(_config(seed=1), tmp_path / "run", toy_fashion, overwrite=True, max_steps=3)
    assert paused.status == "paused"
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1


def test_any_file_of_a_run_is_kept_unless_overwrite_and_then_every_one_goes(toy_fashion, tmp_path):
    """A directory holding only some of a run's files (a model, exports, tensorboard/) is not written into;
    --overwrite removes them all, also what evaluate and export wrote from the old weights."""
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "notes.txt").write_text("mine")
    (run / "model.safetensors").write_bytes(b"old")
    with pytest.raises(RunDirectoryError, match=r"already holds a run's files \(model.safetensors, tensorboard\)"):
        _run(_config(), run, toy_fashion)
    assert (run / "model.safetensors").read_bytes() == b"old" and (run / "tensorboard" / "notes.txt").is_file()
    others = ["confusion.png", "model.onnx", "model.folded.pt2", "model.keras", "notes.md"]
    for name in others:
        (run / name).write_text("old")
    assert _run(_config(), run, toy_fashion, overwrite=True, max_steps=2).status == "paused"
    assert sorted(p.name for p in run.iterdir() if p.name in others) == ["notes.md"]  # not a run's: kept
    assert not (run / "tensorboard").exists() and not (run / "model.safetensors").exists()  # paused before epoch 1


def test_a_default_run_directory_taken_in_the_same_second_gets_a_suffix(tmp_path, monkeypatch):
    from normlab.cli.train import _new_run_directory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261207-215509")
    assert _new_run_directory(None) == Path("runs/20261207-215509")
    Path("runs/20261207-215509").mkdir(parents=True)
    Path("runs/20261207-215509-2").mkdir()
    assert _new_run_directory(None) == Path("runs/20261207-215509-3")


def test_a_file_is_not_a_run_directory(toy_fashion, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="file is a file, not a directory"):
        _run(_config(), tmp_path / "file", toy_fashion)


def _paused(toy_fashion, tmp_path, steps=5, **fields):
    config = _config(**fields)
    assert _run(config, tmp_path / "run", toy_fashion, max_steps=steps).status == "paused"
    return config, tmp_path / "run"


def test_resume_refuses_an_edited_config_naming_the_field(toy_fashion, tmp_path):
    """A changed seed silently redrew the split (validation examples were trained on); a changed lr was
    printed but not used."""
    config, run_dir = _paused(toy_fashion, tmp_path)
    edited = TrainConfig(**{**json.loads(config.to_json()), "seed": 7, "lr": 0.5})
    with pytest.raises(RunDirectoryError, match=r"cannot resume: .*lr was 0.001, config.json now says 0.5; "
                                                r"seed was 0, config.json now says 7"):
        _run(edited, run_dir, toy_fashion, resume=True)


def test_resume_refuses_other_data(toy_fashion, tmp_path):
    """Any data directory of the right size was accepted."""
    config, run_dir = _paused(toy_fashion, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for f in Path(toy_fashion).iterdir():
        a = read_idx(f)
        write_idx(other / f.name, a[::-1].copy() if "images" in f.name and "train" in f.name else a)
    with pytest.raises(RunDirectoryError, match=r"cannot resume: .*the data differ \(dataset identity sha256:"):
        _run(config, run_dir, other, resume=True)
    assert _run(config, run_dir, toy_fashion, resume=True).status == "completed"  # the right data still resume


@pytest.mark.parametrize("change, message", [
    ({"step_in_epoch": 10 ** 9}, r"step_in_epoch must be in \[0, 12\], got 1000000000"),  # spun forever
    ({"step_in_epoch": -3}, r"step_in_epoch must be in \[0, 12\], got -3"),
    ({"epochs_done": -1}, r"epochs_done must be in \[0, 2\], got -1"),
    ({"iteration": 1}, r"iteration 1 is not epochs_done 0 x 12 steps \+ step_in_epoch 5"),
    ({"iteration": "5"}, r"iteration must be an int, got '5'"),
    ({"best_val_acc": 7.0}, r"best_val_acc must be None or in \[0, 1\], got 7.0"),
    ({"rng": None}, r"rng must be a dict, got None"),
    ("drop-steps_per_epoch", r"its metadata lacks 'steps_per_epoch'"),
    ("order-one-example", r"order must be a permutation of the 360 training examples"),
    ("order-missing", r"step_in_epoch 5 needs the epoch's order, which is missing"),
])
def test_every_position_field_is_validated(toy_fashion, tmp_path, change, message):
    config, run_dir = _paused(toy_fashion, tmp_path)
    arrays, meta = load_tensors(run_dir / CHECKPOINT)
    if change == "drop-steps_per_epoch":
        del meta["steps_per_epoch"]
    elif change == "order-one-example":
        arrays["order"] = np.zeros_like(arrays["order"])  # trained on one example
    elif change == "order-missing":
        del arrays["order"]
    else:
        meta.update(change)
    save_tensors(run_dir / CHECKPOINT, arrays, meta)
    with pytest.raises(ValueError, match=f"checkpoint.safetensors: damaged checkpoint: {message}"):
        _run(config, run_dir, toy_fashion, resume=True)


def test_damaged_metadata_json_is_named(toy_fashion, tmp_path):
    import safetensors.numpy

    config, run_dir = _paused(toy_fashion, tmp_path)
    arrays, _ = load_tensors(run_dir / CHECKPOINT)
    (run_dir / CHECKPOINT).write_bytes(safetensors.numpy.save(arrays, metadata={"normlab": "{not json"}))
    with pytest.raises(ValueError, match="checkpoint.safetensors: damaged metadata: not JSON"):
        _run(config, run_dir, toy_fashion, resume=True)


def test_non_finite_weights_are_never_saved_as_the_last_good_checkpoint(toy_fashion, tmp_path):
    """Only the loss was checked: weights that overflowed after a finite-loss step were saved."""
    def poison_at_end_of_epoch_two(trainer, info):
        if info.epoch == 2 and info.step == info.steps_per_epoch:
            next(iter(trainer.model.parameters())).data[0, 0] = np.inf

    result = _run(_config(epochs=3), tmp_path / "run", toy_fashion, callbacks=[poison_at_end_of_epoch_two])
    assert result.status == "diverged"
    assert "holds NaN or inf" in result.message and "last good checkpoint" in result.message
    arrays, meta = load_tensors(tmp_path / "run" / CHECKPOINT)
    assert meta["epochs_done"] == 1 and all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


def test_stale_temporary_files_are_cleaned_on_resume(toy_fashion, tmp_path):
    config, run_dir = _paused(toy_fashion, tmp_path)
    stale = run_dir / ".checkpoint.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert _run(config, run_dir, toy_fashion, resume=True).status == "completed"
    assert not stale.exists()


def _train_command(toy_fashion, out, *extra):
    return [sys.executable, "-m", "normlab", "train", "--no-progress", "--no-download", "--data-dir", str(toy_fashion),
            "--epochs", "6", "--hidden", "256", "256", "--batch-size", "16", "--dropout", "0.1", "--out", str(out),
            *extra]


def test_sigkill_then_resume_is_bit_identical(toy_fashion, tmp_path):
    """Killed with SIGKILL (no handler runs) once the first checkpoint exists, with a temporary file left as a
    kill mid-write leaves it, then resumed: the same weights as a run never interrupted."""
    env = {**os.environ, "PYTHONPATH": SRC}
    whole = subprocess.run(_train_command(toy_fashion, tmp_path / "whole"), check=False, env=env,
                           capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(toy_fashion, killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / CHECKPOINT).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed while training, not after
    assert load_tensors(killed / CHECKPOINT)[1]["epochs_done"] < 6
    (killed / ".checkpoint.safetensors.sigkill.tmp").write_bytes(b"partial")
    resumed = subprocess.run([sys.executable, "-m", "normlab", "train", "--no-progress", "--no-download",
                              "--data-dir", str(toy_fashion), "--resume", str(killed)],
                             check=False, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not (killed / ".checkpoint.safetensors.sigkill.tmp").exists()
    for name in ("model.safetensors", CHECKPOINT):
        a, _ = load_tensors(tmp_path / "whole" / name)
        b, _ = load_tensors(killed / name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k}")


def test_cli_refuses_out_at_an_existing_run_and_a_file(toy_fashion, tmp_path, capsys):
    common = ["train", "--no-progress", "--no-download", "--data-dir", str(toy_fashion), "--epochs", "1",
              "--hidden", "8"]
    assert main([*common, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("normlab train: error: --out ")
    assert "already holds a run" in err and "--overwrite" in err
    assert main([*common, "--out", str(tmp_path / "run"), "--overwrite"]) == 0
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "file")]) == 2
    expected = f"normlab train: error: --out {tmp_path / 'file'} is a file, not a directory"
    assert capsys.readouterr().err.strip() == expected


def test_a_failed_download_leaves_no_run_directory_and_says_where_to_put_the_files(tmp_path, monkeypatch, capsys):
    from normlab.data import sources

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    nowhere = sources.RemoteFile((tmp_path / "nowhere.gz").as_uri(), "md5:" + "0" * 32)
    monkeypatch.setitem(sources.SOURCES, "mnist", sources.DatasetSpec("mnist", sources.SOURCES["mnist"].files,
                                                                      (nowhere,)))
    assert main(["train", "--no-progress", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not download" in err and "to install it by hand, put its files" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "data" / "mnist").exists()
