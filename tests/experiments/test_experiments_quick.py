"""Every experiment end to end through `normlab experiment NAME --quick` on real Fashion-MNIST, shrunk
further by the hidden --scale: the files it writes and what they hold."""

import json
import math

import numpy as np
import pytest

from normlab.cli import main
from normlab.data import DatasetNotFoundError, load_dataset
from normlab.experiments import EXPERIMENTS

SCALE = 0.5  # of the quick version: the same code paths on fewer steps and examples
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fashion_mnist():
    try:
        load_dataset("fashion-mnist", download=False)
    except DatasetNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, fashion_mnist):
    """Runs each experiment once, on first use, and returns (results.json as a dict, summary.md, its directory)."""
    out = tmp_path_factory.mktemp("experiments")
    done = {}

    def get(name):
        if name not in done:
            # The NumPy path for every layer: batch-size checks ghost == batch norm to the bit.
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("NORMLAB_BACKEND", "numpy")
                assert main(["experiment", name, "--quick", "--scale", str(SCALE), "--no-download",
                             "--out", str(out)]) == 0
            d = out / name
            done[name] = json.loads((d / "results.json").read_text()), (d / "summary.md").read_text(), d
        return done[name]

    return get


def check_common(name, results, summary, directory, figures):
    assert results["experiment"] == name and results["claim"] == EXPERIMENTS[name].claim
    assert results["quick"] is True and results["scale"] == SCALE and results["dataset"] == "fashion-mnist"
    assert results["figures"] == figures
    for figure in figures:
        assert (directory / figure).read_bytes()[:8] == PNG
        assert f"![{figure}]({figure})" in summary
    assert summary.startswith(f"# {name}: {EXPERIMENTS[name].claim}\n")
    assert f"`normlab experiment {name} --quick --out " in summary
    assert "\n| :--- |" in summary  # a markdown table


def is_accuracy(v):
    return v is None or (isinstance(v, float) and 0.0 <= v <= 1.0)


def test_covariate_shift(outputs):
    results, summary, d = outputs("covariate-shift")
    check_common("covariate-shift", results, summary, d, ["covariate_shift.png"])
    settings, r = results["settings"], results["results"]
    assert settings["hidden"] == [100, 100, 100] and settings["batch_size"] == 60
    assert settings["activation"] == "sigmoid" and settings["percentiles"] == [15, 50, 85]
    assert set(r["runs"]) == {"none", "batch"} and 0 <= r["unit"] < 100
    for run in r["runs"].values():
        assert run["status"] == "completed" and run["steps"][0] == 0 and run["steps"][-1] == settings["steps"]
        assert all(b > a for a, b in zip(run["steps"], run["steps"][1:]))
        early = settings["early_records"]
        assert early and run["steps"][:len(early) + 2] == [0, *early, settings["every"]]
        assert all(is_accuracy(a) for a in run["test_acc"]) and run["final_test_acc"] == run["test_acc"][-1]
        q = run["unit_percentiles"]
        assert len(q["15"]) == len(run["steps"])
        assert np.all(np.array(q["15"]) <= np.array(q["50"])) and np.all(np.array(q["50"]) <= np.array(q["85"]))
        assert run["median_travel"]["median_over_units"] >= 0 and run["width_ratio"]["median_over_units"] >= 1
    assert r["runs"]["batch"]["final_test_acc"] > 0.6  # a few hundred steps of batch norm learn Fashion-MNIST
    assert "| without batch norm |" in summary and "| with batch norm |" in summary


def test_learning_rate(outputs):
    results, summary, d = outputs("learning-rate")
    check_common("learning-rate", results, summary, d, ["learning_rate.png"])
    settings, r = results["settings"], results["results"]
    assert [b["lr"] for b in r["baseline"]] == settings["baseline_grid"] == [0.003, 0.01, 0.03]
    best = max(r["baseline"], key=lambda b: b["best_val_acc"])
    assert r["best_lr"] == best["lr"] and r["target_acc"] == best["best_val_acc"]
    assert [b["multiplier"] for b in r["batchnorm"]] == [1, 5, 30]
    for b in r["batchnorm"]:
        assert b["normalization"] == "batch" and math.isclose(b["lr"], r["best_lr"] * b["multiplier"])
        assert all(is_accuracy(a) for a in b["val_acc"])
        if b["steps_to_target"] is None:
            assert b["speedup"] is None
        else:
            assert b["steps_to_target"] in b["steps"]
            assert math.isclose(b["speedup"], r["target_steps"] / b["steps_to_target"])
    assert ("times fewer steps" in summary) or ("did not reach the baseline's best accuracy" in summary)


def test_init_scale(outputs):
    results, summary, d = outputs("init-scale")
    check_common("init-scale", results, summary, d, ["init_scale.png"])
    settings, r = results["settings"], results["results"]
    assert settings["hidden"] == [50] * 7
    scales = settings["weight_scales"]
    np.testing.assert_allclose(scales, np.logspace(-4, 0, len(scales)))
    for norm in ("none", "batch"):
        runs = r["runs"][norm]
        assert [x["weight_scale"] for x in runs] == scales
        for x in runs:
            assert is_accuracy(x["best_val_acc"]) and is_accuracy(x["best_train_acc"])
            assert x["final_loss"] is None or x["final_loss"] > 0
    # At the smallest scale a plain seven-layer ReLU net cannot start learning; batch norm's can.
    assert r["runs"]["batch"][0]["best_train_acc"] > r["runs"]["none"][0]["best_train_acc"] + 0.1


def test_batch_size(outputs):
    results, summary, d = outputs("batch-size")
    check_common("batch-size", results, summary, d, ["batch_size.png"])
    settings, r = results["settings"], results["results"]
    assert settings["batch_sizes"] == [2, 8, 32, 128] and settings["virtual_batch_size"] == 16
    assert list(r["runs"]) == ["batch", "layer", "group", "renorm", "ghost"]
    for runs in r["runs"].values():
        assert list(runs) == ["2", "8", "32", "128"]
        assert all(is_accuracy(x["val_error"]) for x in runs.values())
    # Up to its virtual batch size ghost batch norm is batch norm, computation for computation.
    for b in ("2", "8"):
        assert r["runs"]["ghost"][b]["val_error"] == r["runs"]["batch"][b]["val_error"]
    schedule = r["runs"]["renorm"]["2"]["renorm_schedule"]
    steps = r["runs"]["renorm"]["2"]["steps"]
    assert schedule["rmax_full_at"] == round(0.4 * steps) and schedule["warmup_steps"] == round(0.05 * steps)
    assert "| batch renorm |" in summary and "| batch 2 |" in summary


def test_regularization(outputs):
    results, summary, d = outputs("regularization")
    check_common("regularization", results, summary, d, ["regularization.png"])
    r = results["results"]["runs"]
    assert list(r) == ["baseline", "dropout", "batch norm", "batch norm + dropout"]
    assert [(x["normalization"], x["dropout"]) for x in r.values()] == [("none", 0), ("none", 0.5), ("batch", 0),
                                                                        ("batch", 0.5)]
    for x in r.values():
        assert len(x["train_acc"]) == len(x["val_acc"]) == results["settings"]["epochs"]
        assert all(is_accuracy(a) for a in x["train_acc"] + x["val_acc"])
        assert math.isclose(x["final_gap"], x["final_train_acc"] - x["final_val_acc"])
    assert "The regularization claim" in summary


def test_backward_speed(outputs):
    results, summary, d = outputs("backward-speed")
    check_common("backward-speed", results, summary, d, ["backward_speed.png"])
    rows = results["results"]["timings"]
    shapes = results["settings"]["shapes"]
    assert [(r["dtype"], r["shape"]) for r in rows] == [(t, s) for t in ("float32", "float64") for s in shapes]
    for r in rows:
        assert r["staged_ms"] > 0 and r["simplified_ms"] > 0 and r["speedup_of_fastest"] > 0
        assert r["max_relative_error"] < (1e-5 if r["dtype"] == "float32" else 1e-12)  # the same gradients
    assert "CS231n reports 1.7-2.1x" in summary


def test_help_lists_every_experiment(capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    text = capsys.readouterr().out
    for name, experiment in EXPERIMENTS.items():
        assert f"  {name}" in text and experiment.claim in text
    assert "--scale" not in text


def test_a_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["experiment", "init-scale", "--quick", "--dataset", "cifar10", "--no-download",
                 "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)])
    assert code == 2
    assert "normlab experiment: error: cifar10 not found" in capsys.readouterr().err
