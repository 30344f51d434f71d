"""Fuzzing `normlab train` (bounded in time): random option lists, hostile values and run directories end
in a finished run or in one line naming what is wrong (exit status 2), never a traceback or a hang.

Each example trains at most one epoch on at most 64 toy examples. NORMLAB_FUZZ_EXAMPLES raises the number
of examples for a longer run (docs/reliability.md).
"""

import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from normlab.cli import main

EXAMPLES = int(os.environ.get("NORMLAB_FUZZ_EXAMPLES", "8"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HOSTILE = ["", "-1", "0", "1e400", "nan", "-inf", "abc", "../..", "1.5", "3", "x" * 300, "\x00", "☃"]
VALUES = {
    "--dataset": ["fashion-mnist", "mnist", "cifar10"], "--model": ["fcnet", "bn-cnn", "convnet3"],
    "--hidden": ["8", "16 8", "0"], "--normalization": ["none", "batch", "layer", "group"],
    "--dropout": ["0.2", "0.99"], "--weight-scale": ["he", "0.01"], "--optimizer": ["sgd", "adam", "adamw", "rmsprop"],
    "--lr": ["0.01", "1e-3", "100"], "--momentum": ["0.9", "0"], "--weight-decay": ["0", "0.1"],
    "--schedule": ["constant", "step", "cosine"], "--warmup": ["0", "0.5", "-27"], "--step-epochs": ["1", "2"],
    "--step-gamma": ["0.5", "0"], "--batch-size": ["16", "64", "1000"], "--seed": ["0", "5"],
    "--val-size": ["0", "10", "100000"], "--framework": ["numpy"],
}
FLAGS = ["--nesterov", "--augment", "--no-augment", "--overwrite", "--progress", "--distributed", "--sync-bn"]


@st.composite
def argument_lists(draw):
    args = []
    for option in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=6, unique=True)):
        value = draw(st.one_of(st.sampled_from(VALUES[option]), st.sampled_from(HOSTILE)))
        args += [option, *value.split(" ")] if value else [option, value]
    args += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    return args


@pytest.fixture(scope="module")
def hermetic(toy_fashion, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return toy_fashion, home


@FUZZ
@given(args=argument_lists(), where=st.sampled_from(["new", "existing-run", "file", "resume-garbage"]))
def test_fuzz_train_options(hermetic, tmp_path_factory, monkeypatch, capsys, args, where):
    data, home = hermetic
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    run = tmp_path_factory.mktemp("runs") / "run"
    target = ["--out", str(run)]
    if where == "existing-run":
        run.mkdir()
        (run / "config.json").write_text("{}")
    elif where == "file":
        run.write_text("not a directory")
    elif where == "resume-garbage":
        run.mkdir()
        (run / "config.json").write_text('{"epochs": 1, "limit": 64}')
        (run / "checkpoint.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        target = ["--resume", str(run)]
    argv = ["train", "--no-progress", "--no-download", "--data-dir", str(data), *args, *target]
    if where != "resume-garbage":
        argv += ["--epochs", "1", "--limit", "64"]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: usage errors exit 2
        code = e.code
    err = capsys.readouterr().err
    event(f"exit status {code}")  # --hypothesis-show-statistics counts the outcomes
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code == 2:
        last = err.strip().splitlines()[-1]
        assert last.startswith("normlab train: error"), err
        assert len(last) < 2000
