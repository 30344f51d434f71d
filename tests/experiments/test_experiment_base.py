"""The experiments' shared pieces: seeds, sizes, JSON without NaN, markdown tables, training with probes,
the registry and `run_experiment`'s files, on a registered toy experiment."""

import json
import math

import numpy as np
import pytest

from normlab.experiments import EXPERIMENTS
from normlab.experiments.base import (
    Context,
    Report,
    ResultsExist,
    first_step_reaching,
    fmt,
    markdown_table,
    plain_json,
    pyplot,
    register_experiment,
    run_experiment,
    train,
)
from normlab.models import FullyConnectedNet
from normlab.optim import SGD
from normlab.train.run import PreparedData


def toy_data(rng, n_train=61, n_val=20, d=6):
    """Two linearly separable classes in d features, as (N, 1, 1, d) images."""
    def make(n):
        y = rng.integers(0, 2, n)
        x = rng.standard_normal((n, 1, 1, d)).astype(np.float32)
        x[:, 0, 0, 0] += 3 * (2 * y - 1)
        return x, y
    (xt, yt), (xv, yv) = make(n_train), make(n_val)
    return PreparedData(xt, yt, xv, yv, xv, yv, ("a", "b"))


def test_rng_is_a_function_of_the_seed_and_the_labels(tmp_path):
    ctx = Context("x", tmp_path, seeds=(3, 4))
    assert ctx.rng("init").random() == ctx.rng("init").random()
    assert ctx.rng("init").random() != ctx.rng("order").random()
    assert ctx.rng("init").random() != Context("x", tmp_path, seeds=(4,)).rng("init").random()
    # A run's generators are those of its own seed.
    assert ctx.spec({}, 4).rng("init").random() == Context("x", tmp_path, seeds=(4,)).rng("init").random()
    assert ctx.rng("init", 2).random() != ctx.rng("init", 3).random()


def test_count_and_pick_choose_by_quick_and_scale(tmp_path):
    full, quick = Context("x", tmp_path), Context("x", tmp_path, quick=True, scale=0.1)
    assert full.count(1000, 300) == 1000 and full.pick("big", "small") == "big"
    assert quick.count(1000, 300) == 30 and quick.count(1000, 300, minimum=50) == 50
    assert quick.pick("big", "small") == "small" and full.count(None, 5) is None


def test_plain_json_turns_numpy_values_and_non_finite_numbers_into_json():
    value = {"a": np.float32(0.5), "b": [np.nan, math.inf, 1.0], "c": np.arange(3), "d": (np.int64(2), np.bool_(True)),
             3: None}
    plain = plain_json(value)
    assert plain == {"a": 0.5, "b": [None, None, 1.0], "c": [0, 1, 2], "d": [2, True], "3": None}
    json.dumps(plain, allow_nan=False)  # raises if a NaN survived


def test_markdown_table_and_number_formatting():
    table = markdown_table(["name", "value"], [["a", fmt(0.12345)], ["b", fmt(None)], ["c", fmt(math.nan, ".2f")]])
    assert table.splitlines() == ["| name | value |", "| :--- | ---: |", "| a | 0.1235 |", "| b | — |", "| c | — |"]
    with pytest.raises(ValueError, match="every row and the alignment need 2 columns"):
        markdown_table(["a", "b"], [["only one"]])


def test_first_step_reaching_skips_missing_values():
    assert first_step_reaching([0, 10, 20, 30], [0.1, None, 0.8, 0.9], 0.75) == 20
    assert first_step_reaching([0, 10], [0.1, 0.2], 0.5) is None


def test_train_probes_every_k_steps_and_after_the_last(rng):
    data = toy_data(rng)
    model = FullyConnectedNet(6, (8,), 2, normalization="batch", rng=rng)
    r = train(model, SGD(model.parameters(), lr=0.1), data, batch_size=10, rng=rng, steps=25, every=10,
              probe=lambda trainer: {"val_acc": trainer.accuracy(data.x_val, data.y_val)})
    assert r.status == "completed" and r.steps == 25
    steps, accs = r.series("val_acc")
    assert steps == [0, 10, 20, 25] and all(0 <= a <= 1 for a in accs)
    assert accs[-1] > 0.9  # the toy problem is separable
    # 61 examples in batches of 10 would leave a batch of one, which batch norm cannot normalize: it is dropped.
    assert r.trainer.steps_per_epoch == 6 and len(r.history.epochs) == 4


def test_train_reports_divergence(rng):
    data = toy_data(rng)
    model = FullyConnectedNet(6, (8,), 2, normalization="none", weight_scale=1e3, rng=rng)
    r = train(model, SGD(model.parameters(), lr=1e6), data, batch_size=10, rng=rng, epochs=3)
    assert r.diverged and r.steps < 18
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        train(model, SGD(model.parameters()), data, batch_size=10, rng=rng)


@pytest.fixture
def toy_experiment():
    @register_experiment("toy", claim="toys have claims")
    def run(ctx):
        plt = pyplot()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        ctx.save_figure(fig, "toy.png")
        ctx.log("toy ran")
        return Report({"size": ctx.count(10, 4)}, {"value": math.nan, "array": np.ones(2)},
                      markdown_table(["a"], [["1"]]))

    yield "toy"
    del EXPERIMENTS["toy"]


def test_run_experiment_writes_results_summary_and_plots(toy_experiment, tmp_path):
    lines = []
    out = run_experiment(toy_experiment, tmp_path, quick=True, scale=0.5, seed=7, log=lines.append)
    assert out == tmp_path / "toy" and lines == ["toy ran"]
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "toy" and results["claim"] == "toys have claims" and results["quick"] is True
    assert results["settings"] == {"size": 2} and results["results"] == {"value": None, "array": [1.0, 1.0]}
    assert results["figures"] == ["toy.png"] and results["seed"] == 7 and results["seconds"] >= 0
    assert results["seeds"] == [7, 8]  # --quick runs 2 seeds by default
    assert results["command"] == f"normlab experiment toy --quick --seeds 2 --seed 7 --out {tmp_path}"
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# toy: toys have claims\n") and "| a |\n| :--- |\n| 1 |" in summary
    assert "Verdict rule (the same for every claim)" in summary
    assert "![toy.png](toy.png)" in summary
    assert f"`normlab experiment toy --quick --seeds 2 --seed 7 --out {tmp_path}`" in summary
    assert (out / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_registry_refuses_duplicates_and_run_experiment_names_bad_arguments(toy_experiment, tmp_path):
    with pytest.raises(ValueError, match="an experiment named 'toy' is already registered"):
        register_experiment("toy", claim="again")(lambda ctx: None)
    with pytest.raises(ValueError, match=r"experiment must be one of \[.*'covariate-shift'.*\], got 'nope'"):
        run_experiment("nope", tmp_path)
    with pytest.raises(ValueError, match=r"dataset must be one of .*, got 'svhn'"):
        run_experiment("toy", tmp_path, dataset="svhn")
    with pytest.raises(ValueError, match="scale must be > 0, got 0"):
        run_experiment("toy", tmp_path, quick=True, scale=0)
    with pytest.raises(ValueError, match="seeds must be a positive integer, got 0"):
        run_experiment("toy", tmp_path, quick=True, seeds=0)
    with pytest.raises(ValueError, match="jobs must be a positive integer, got 0"):
        run_experiment("toy", tmp_path, quick=True, jobs=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        run_experiment("toy", tmp_path / "negative", quick=True, seed=-1)
    assert not (tmp_path / "negative").exists()  # refused before anything ran or was written


def test_the_cli_refuses_a_negative_seed(tmp_path, capsys):
    from normlab.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["experiment", "learning-rate", "--quick", "--seed", "-1", "--out", str(tmp_path)])
    assert exit.value.code == 2
    assert "--seed: expected a non-negative integer, got '-1'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_finished_result_is_never_overwritten_silently(toy_experiment, tmp_path, capsys):
    from normlab.cli import main

    first = run_experiment(toy_experiment, tmp_path, quick=True, log=lambda line: None)
    stamp = (first / "results.json").read_bytes()
    with pytest.raises(ResultsExist, match=r"toy/results.json already exists: pass --overwrite"):
        run_experiment(toy_experiment, tmp_path, quick=True, log=lambda line: None)
    assert (first / "results.json").read_bytes() == stamp
    assert main(["experiment", "toy", "--quick", "--out", str(tmp_path)]) == 2
    assert "already exists: pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["experiment", "toy", "--quick", "--out", str(tmp_path), "--overwrite"]) == 0
