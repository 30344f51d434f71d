"""What `normlab train` and its neighbours say: a finished run resumed says it is complete and trains
nothing; option help shows defaults."""

import json

from normlab.cli import build_parser, main


def train(*args):
    return main(["train", "--no-progress", "--no-download", *map(str, args)])


def test_resuming_a_finished_run_says_it_is_complete_and_trains_nothing(toy_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--data-dir", toy_fashion, "--epochs", 1, "--hidden", 8, "--out", out) == 0
    test_acc = capsys.readouterr().out.strip().splitlines()[-1].split()[2]
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert train("--resume", out) == 0  # no --data-dir: it does not even load the data
    captured = capsys.readouterr()
    assert captured.out.strip() == (f"{out} is already complete (1 of 1 epoch, test accuracy {test_acc}); nothing "
                                    "to train. To train longer, start a new run with --epochs.")
    assert captured.err == ""
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before


def test_resuming_a_run_trained_to_the_end_but_not_tested_measures_the_test_accuracy(toy_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--data-dir", toy_fashion, "--epochs", 1, "--hidden", 8, "--out", out) == 0
    capsys.readouterr()
    history = out / "history.json"
    recorded = json.loads(history.read_text())
    assert recorded["test_acc"] is not None
    history.write_text(json.dumps({**recorded, "test_acc": None}))  # as if stopped between training and test
    assert train("--resume", out, "--data-dir", toy_fashion) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test accuracy ")


def test_gradcheck_help_shows_the_default_tolerance(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["gradcheck"]
    # the help wraps with the terminal's width: compare the words
    assert "largest relative error that passes (default 1e-07)" in " ".join(sub.format_help().split())


def test_resuming_a_finished_run_with_a_damaged_history_names_the_file(toy_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--data-dir", toy_fashion, "--epochs", 1, "--hidden", 8, "--out", out) == 0
    (out / "history.json").write_text("{not json")
    capsys.readouterr()
    assert train("--resume", out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{out / 'history.json'}: damaged: expected the JSON object" in err
