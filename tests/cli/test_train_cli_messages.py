"""`normlab train` errors are one line naming the option or file the user gave and what was expected, never
an internal parameter (gamma, out_features, warmup_steps) or a traceback."""

import json

import pytest

from normlab.cli import main


def _train(*args):
    return main(["train", "--no-progress", "--no-download", *map(str, args)])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("option, value, expected", [
    ("--warmup", "-27", "expected a number >= 0, got '-27'"),  # was: warmup_steps -27
    ("--step-gamma", "0", "expected a number > 0, got '0'"),  # was: gamma must be > 0
    ("--step-gamma", "nan", "expected a finite number, got 'nan'"),
    ("--hidden", "0", "expected a number >= 1, got '0'"),  # was: out_features must be positive
    ("--epochs", "0", "expected a number >= 1, got '0'"),
    ("--epochs", "1.5", "expected an integer, got '1.5'"),
    ("--batch-size", "-4", "expected a number >= 1, got '-4'"),
    ("--lr", "inf", "expected a finite number, got 'inf'"),
    ("--lr", "0", "expected a number > 0, got '0'"),
    ("--momentum", "1", "expected a number >= 0 and < 1, got '1'"),
    ("--dropout", "1", "expected a number >= 0 and < 1, got '1'"),
    ("--weight-decay", "-0.001", "expected a number >= 0, got '-0.001'"),
    ("--limit", "1", "expected a number >= 2, got '1'"),
    ("--val-size", "-1", "expected a number >= 0, got '-1'"),
    ("--step-epochs", "0", "expected a number >= 1, got '0'"),
    ("--seed", "-1", "expected a number >= 0, got '-1'"),
    ("--weight-scale", "-1", "expected 'he' or a finite number > 0, got '-1'"),
])
def test_bad_option_values_name_the_option(option, value, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _train(option, value)
    assert exit_info.value.code == 2
    assert _one_line_error(capsys) == f"normlab train: error: argument {option}: {expected}"


def _run_dir(tmp_path, config=None, distributed=None):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(config if config is not None else '{"epochs": 1}')
    (run / "checkpoint.safetensors").write_bytes(b"")
    if distributed is not None:
        (run / "distributed.json").write_text(distributed)
    return run


@pytest.mark.parametrize("config, message", [
    ("{not json", r"config.json: damaged: not JSON \(Expecting property name"),
    ("[1, 2]", "config.json: damaged: expected a JSON object of settings, got list"),
    ('{"epochs": -2}', "config.json: epochs must be a positive integer, got -2"),
    ('{"colour": "red"}', r"config.json: unknown configuration keys \['colour'\]"),
])
def test_a_damaged_config_json_is_one_line_naming_the_file(tmp_path, capsys, config, message):
    run = _run_dir(tmp_path, config)
    assert _train("--resume", run) == 2
    line = _one_line_error(capsys)
    assert line.startswith("normlab train: error: ") and str(run / "config.json") in line
    assert __import__("re").search(message, line), line


@pytest.mark.parametrize("distributed, message", [
    ("{}", r"distributed.json: damaged: expected a JSON object with a true/false \"sync_batchnorm\" \(KeyError"),
    ("oops", r"distributed.json: damaged: .*JSONDecodeError"),
    ('{"sync_batchnorm": "yes"}', r"distributed.json: damaged: \"sync_batchnorm\" must be true or false, got 'yes'"),
])
def test_damaged_resume_metadata_is_one_line(tmp_path, capsys, distributed, message):
    run = _run_dir(tmp_path, distributed=distributed)
    assert _train("--resume", run) == 2
    assert __import__("re").search(message, _one_line_error(capsys))


def test_resume_of_a_file_or_with_overwrite(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _train("--resume", tmp_path / "file") == 2
    expected = f"normlab train: error: --resume {tmp_path / 'file'}: is a file, not a run directory"
    assert _one_line_error(capsys) == expected
    run = _run_dir(tmp_path)
    assert _train("--resume", run, "--overwrite") == 2
    assert "do not combine it with --overwrite" in _one_line_error(capsys)


def test_resume_of_an_empty_checkpoint_is_one_line(tmp_path, capsys, toy_fashion):
    run = _run_dir(tmp_path, json.dumps({"epochs": 1, "model_options": {"hidden_dims": [8]}}))
    assert _train("--resume", run, "--data-dir", toy_fashion) == 2
    line = _one_line_error(capsys)
    assert "checkpoint.safetensors: not a readable safetensors file" in line


def test_a_permission_error_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """Tests run as root, which reads any directory: the error is raised where the data are read."""
    import normlab.train.run as run_module

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/fashion-mnist/train-images-idx3-ubyte.gz")

    monkeypatch.setattr(run_module, "prepare_data", unreadable)
    assert _train("--epochs", 1, "--out", tmp_path / "run") == 2
    assert _one_line_error(capsys) == ("normlab train: error: Permission denied: "
                                       "/data/fashion-mnist/train-images-idx3-ubyte.gz")
    assert not (tmp_path / "run").exists()
