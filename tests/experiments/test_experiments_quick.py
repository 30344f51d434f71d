"""Every experiment end to end through `normlab experiment NAME --quick --seeds 2` on real Fashion-MNIST,
shrunk further by the hidden --scale, its runs in two worker processes: the files it writes and what they
hold (every seed's values, intervals, verdicts by the rule, statuses)."""

import math

import numpy as np
import pytest

from normlab.cli import main
from normlab.experiments import EXPERIMENTS

SCALE = 0.3  # of the quick version: the same code paths on fewer steps and examples
SEEDS = [0, 1]
PNG = b"\x89PNG\r\n\x1a\n"
VERDICTS = ("holds", "does not hold", "inconclusive")


@pytest.fixture(scope="module")
def outputs(quick_outputs):
    return lambda name, model=None: quick_outputs(name, model, SCALE)


def check_common(name, results, summary, directory, figures):
    assert results["experiment"] == name and results["claim"] == EXPERIMENTS[name].claim
    assert results["quick"] is True and results["scale"] == SCALE and results["dataset"] == "fashion-mnist"
    assert results["seeds"] == SEEDS and results["results"]["seeds"] == SEEDS
    assert results["executor"] == "ProcessPoolExecutor" and results["runs_computed"] > 0
    assert results["figures"] == figures
    for figure in figures:
        assert (directory / figure).read_bytes()[:8] == PNG
        assert f"![{figure}]({figure})" in summary
    assert summary.startswith(f"# {name}: {EXPERIMENTS[name].claim}\n")
    assert f"`normlab experiment {name} --quick --seeds 2 --out " in summary
    assert "Verdict rule (the same for every claim)" in summary
    assert "\n| :--- |" in summary  # a markdown table


def check_interval(iv, n=2):
    assert iv["n"] == n
    if iv["mean"] is not None and iv["low"] is not None:
        assert iv["low"] <= iv["mean"] <= iv["high"]


def check_verdict(comparison, n=2):
    check_interval(comparison["difference"], n)
    iv = comparison["difference"]
    assert comparison["verdict"].startswith(VERDICTS)
    if iv["low"] is not None and iv["low"] < 0 < iv["high"]:
        assert comparison["verdict"].startswith("inconclusive (CI [")


def is_accuracy(v):
    return v is None or (isinstance(v, float) and 0.0 <= v <= 1.0)


def test_covariate_shift(outputs):
    results, summary, d = outputs("covariate-shift")
    check_common("covariate-shift", results, summary, d, ["covariate_shift.png"])
    settings, r = results["settings"], results["results"]
    assert settings["hidden"] == [100, 100, 100] and settings["activation"] == "sigmoid"
    assert set(r["runs"]) == {"small", "batch", "glorot"}
    for runs in r["runs"].values():
        assert len(runs) == 2
        for run in runs:
            assert run["status"] == "completed" and run["steps"][0] == 0 and run["steps"][-1] == settings["steps"]
            assert all(is_accuracy(a) for a in run["test_acc"]) and run["final_test_acc"] == run["test_acc"][-1]
        q = np.array(runs[0]["unit_percentiles"])  # (T, 3, units), kept for the first seed (the plot's)
        assert q.shape[:2] == (len(runs[0]["steps"]), 3) and np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])
        assert runs[1]["unit_percentiles"] is None
    for c in r["comparisons"].values():
        check_verdict(c)
    assert min(run["final_test_acc"] for run in r["runs"]["batch"]) > 0.5  # batch norm learns in a few hundred steps
    assert "Glorot init" in summary


def test_learning_rate(outputs):
    results, summary, d = outputs("learning-rate")
    check_common("learning-rate", results, summary, d, ["learning_rate.png"])
    r = results["results"]
    for grid in r["grids"].values():
        top = max(grid, key=float)
        # The grid was extended until every seed failed at its largest rate (or the cap).
        assert all(run["status"] != "completed" for run in grid[top]) or float(top) > 1e3
        for runs in grid.values():
            assert len(runs) == 2 and all(is_accuracy(run["final_val_acc"]) for run in runs)
            for run in runs:
                if run["status"] != "completed":
                    assert run["status"].startswith(("diverged at step", "collapsed at step", "did not learn"))
    for stable in r["largest_stable"].values():
        assert len(stable) == 2
    assert set(r["arms"]) == {"baseline", "BN-Baseline", "BN-x5"}
    assert math.isclose(r["arms"]["BN-x5"][0]["steps"][-1], results["settings"]["comparison_steps"])
    for arm in r["comparisons"].values():
        check_verdict(arm["mean_val_acc"])
    assert "2.3x" in summary and "14x" in summary


def test_init_scale(outputs):
    results, summary, d = outputs("init-scale")
    check_common("init-scale", results, summary, d, ["init_scale.png"])
    check_init_scale_runs(results, {"adam", "sgd"})


def check_init_scale_runs(results, optimizers):
    """Every arm at every scale with both seeds, and eps's effect at the smallest scale."""
    settings, r = results["settings"], results["results"]
    scales = settings["weight_scales"]
    np.testing.assert_allclose(scales, np.logspace(-4, 0, len(scales)))
    assert set(r["runs"]) == optimizers
    for opt in r["runs"].values():
        assert set(opt) == {"none", "batch", "batch-tiny-eps"}
        for per_scale in opt.values():
            assert len(per_scale) == len(scales) and all(len(seeds) == 2 for seeds in per_scale)
    # eps: at the smallest scale the first layer's pre-activation variance (the stem convolution's output
    # in the CNN: it scales with s^2) is far below 1e-5 ...
    smallest = r["runs"]["adam"]["batch"][0][0]
    assert smallest["first_pre_var"] < 1e-5
    # ... so batch norm with eps 1e-5 passes on a much weaker signal than with eps 1e-12.
    assert smallest["signal_std"] < 0.1 * r["runs"]["adam"]["batch-tiny-eps"][0][0]["signal_std"]
    for c in r["comparisons"].values():
        check_verdict(c)


def test_batch_size(outputs):
    results, summary, d = outputs("batch-size")
    check_common("batch-size", results, summary, d, ["batch_size.png"])
    settings, r = results["settings"], results["results"]
    assert settings["batch_sizes"] == [2, 32]
    assert list(r["runs"]) == ["batch", "layer", "group", "renorm", "renorm-0.01"]
    assert settings["arms"]["renorm"]["momentum"] == settings["arms"]["batch"]["momentum"] == 0.1
    for arm, runs in r["runs"].items():
        for seeds in runs.values():
            assert len(seeds) == 2
            for run in seeds:
                assert is_accuracy(run["val_error"]) and is_accuracy(run["val_error_recomputed"])
                if arm in ("layer", "group"):  # no running statistics: the two evaluations are one
                    assert run["val_error_recomputed"] == run["val_error"]
    for c in r["comparisons"].values():
        check_verdict(c)
    assert "recomputed statistics" in summary and "34.7" in summary


def test_regularization(outputs):
    results, summary, d = outputs("regularization")
    check_common("regularization", results, summary, d, ["regularization.png"])
    r = results["results"]
    assert set(r["runs"]) == {"100", "20", "500"}
    assert list(r["runs"]["100"]) == ["baseline", "dropout", "batch norm", "batch norm + dropout"]
    for runs in r["runs"].values():
        for seeds in runs.values():
            for run in seeds:
                assert len(run["train_acc"]) == len(run["val_acc"]) == results["settings"]["epochs"]
                assert math.isclose(run["final_gap"], run["final_train_acc"] - run["final_val_acc"])
    for c in r["comparisons"].values():
        check_verdict(c)
    assert "positive control" in summary


def test_sync_batchnorm(outputs):
    results, summary, d = outputs("sync-batchnorm")
    check_common("sync-batchnorm", results, summary, d, ["sync_batchnorm.png"])
    r = results["results"]
    assert results["settings"]["processes"] == 2 and results["settings"]["per_rank_batches"] == [2, 8]
    for kinds in r["runs"].values():
        assert set(kinds) == {"local", "sync"}
        for runs in kinds.values():
            assert len(runs) == 2 and all(is_accuracy(run["final_val_acc"]) for run in runs)
    for c in r["comparisons"].values():
        check_interval(c["sync_minus_local"])
        assert c["verdict"].startswith(VERDICTS)


def test_backward_speed(outputs):
    results, summary, d = outputs("backward-speed")
    check_common("backward-speed", results, summary, d, ["backward_speed.png"])
    rows = results["results"]["timings"]
    shapes = results["settings"]["shapes"]
    assert [(r["dtype"], r["shape"]) for r in rows] == [(t, s) for t in ("float32", "float64") for s in shapes]
    for r in rows:
        assert r["staged_ms"] > 0 and r["simplified_ms"] > 0 and len(r["speedup_of_fastest_per_seed"]) == 2
        assert r["max_relative_error"] < (1e-5 if r["dtype"] == "float32" else 1e-12)  # the same gradients
    assert "CS231n reports 1.7-2.1x" in summary


def test_batch_size_cnn(outputs):
    results, summary, d = outputs("batch-size", "bn-cnn")
    check_common("batch-size-cnn", results, summary, d, ["batch_size_cnn.png"])
    settings, r = results["settings"], results["results"]
    assert settings["model"] == "bn-cnn" and settings["widths"] == [8, 16] and settings["batch_sizes"] == [2, 32]
    assert settings["lr"] == {"2": 0.03 * 2 / 32, "32": 0.03}  # the linear rule
    assert list(r["runs"]) == ["batch", "group", "renorm", "ghost", "none"]
    assert r["runs"]["ghost"]["2"] == r["runs"]["batch"]["2"]  # one virtual batch of 8 or fewer: batch norm
    assert r["runs"]["ghost"]["32"] != r["runs"]["batch"]["32"]
    for arm, runs in r["runs"].items():
        for seeds in runs.values():
            assert len(seeds) == 2
            for run in seeds:
                assert is_accuracy(run["val_error"]) and is_accuracy(run["val_error_recomputed"])
                assert len(run["val_acc"]) == settings["epochs"]
                if arm in ("group", "none"):  # no running statistics: the two evaluations are one
                    assert run["val_error_recomputed"] == run["val_error"]
    for arm, change in r["changes"].items():  # each arm's paired change from batch 32 to batch 2
        errors = [[run["val_error"] for run in r["runs"][arm][b]] for b in ("2", "32")]
        assert math.isclose(change["mean"], np.mean(np.subtract(*errors)), abs_tol=1e-12)
    for c in r["comparisons"].values():
        check_verdict(c)
    assert "+11.1 points (23.6 -> 34.7 %" in summary and "N x H x W" in summary


def test_learning_rate_cnn(outputs):
    results, summary, d = outputs("learning-rate", "bn-cnn")
    check_common("learning-rate-cnn", results, summary, d, ["learning_rate_cnn.png"])
    settings, r = results["settings"], results["results"]
    assert settings["model"] == "bn-cnn" and settings["batch_size"] == 32
    assert settings["thresholds"] == [0.65, 0.7, 0.75]
    for runs in r["arms"].values():
        for run in runs:
            assert set(run["steps_to"]) == {"0.65", "0.7", "0.75"}
            assert run["steps"][-1] == settings["comparison_steps"]
    for stable in r["largest_stable"].values():
        assert len(stable) == 2
    for arm in r["comparisons"].values():
        check_verdict(arm["final_val_acc"])
    assert "slimmed bn-cnn" in summary and "batches of 32" in summary


def test_init_scale_cnn(outputs):
    results, summary, d = outputs("init-scale", "bn-cnn")
    check_common("init-scale-cnn", results, summary, d, ["init_scale_cnn.png"])
    assert list(results["settings"]["optimizers"]) == ["adam"]
    check_init_scale_runs(results, {"adam"})


def test_help_lists_every_experiment(capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    text = capsys.readouterr().out
    for name, experiment in EXPERIMENTS.items():
        assert f"  {name}" in text and experiment.claim in text
    assert "--scale" not in text and "--jobs N" in text and "--overwrite" in text


def test_a_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["experiment", "init-scale", "--quick", "--dataset", "cifar10", "--no-download",
                 "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)])
    assert code == 2
    assert "normlab experiment: error: cifar10 not found" in capsys.readouterr().err


def test_bad_seeds_and_jobs_are_named(capsys):
    for option in ("--seeds", "--jobs"):
        with pytest.raises(SystemExit):
            main(["experiment", "init-scale", option, "0"])
        assert f"argument {option}: expected a positive integer, got '0'" in capsys.readouterr().err
