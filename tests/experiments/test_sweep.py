"""Sweeps: the same results whatever the executor and the number of workers, and a resumed sweep reads its
finished runs from the cache instead of running them again."""

import concurrent.futures
import json

import numpy as np
import pytest

from normlab.experiments.base import train
from normlab.experiments.sweep import InlineExecutor, RunSpec, Sweep, make_executor
from normlab.models import FullyConnectedNet
from normlab.optim import SGD
from normlab.train.run import PreparedData


def train_toy(spec: RunSpec) -> dict:
    """A tiny training run on data drawn from the seed: its losses and final accuracy."""
    rng = spec.rng("data")
    x = rng.standard_normal((80, 1, 1, 6)).astype(np.float32)
    y = (x[:, 0, 0, 0] > 0).astype(np.int64)
    data = PreparedData(x[:60], y[:60], x[60:], y[60:], x[60:], y[60:], ("a", "b"))
    model = FullyConnectedNet(6, (8,), 2, normalization=spec.config["norm"], rng=spec.rng("init"))
    r = train(model, SGD(model.parameters(), lr=spec.config["lr"], momentum=0.9), data, batch_size=10,
              rng=spec.rng("order"), steps=12)
    return {"loss": r.history.loss, "val_acc": r.trainer.accuracy(data.x_val, data.y_val)}


SPECS = [RunSpec("toy", {"norm": norm, "lr": lr}, seed) for norm in ("none", "batch") for lr in (0.05, 0.2)
         for seed in (0, 1)]


class CountingExecutor(InlineExecutor):
    def __init__(self):
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_results_are_identical_with_one_and_two_workers():
    inline = Sweep(InlineExecutor(), None, log=lambda line: None).map(train_toy, SPECS)
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        parallel = Sweep(pool, None, log=lambda line: None).map(train_toy, SPECS)
    assert parallel == inline  # bit for bit, in the order of the specs
    assert len({json.dumps(r) for r in inline}) == len(SPECS)  # every configuration and seed differs
    assert isinstance(make_executor(1), InlineExecutor)
    with make_executor(2) as executor:
        assert isinstance(executor, concurrent.futures.ProcessPoolExecutor)


def test_a_resumed_sweep_skips_finished_runs(tmp_path):
    first = CountingExecutor()
    sweep = Sweep(first, tmp_path, log=lambda line: None)
    results = sweep.map(train_toy, SPECS[:5])  # interrupted after 5 of the 8 runs
    assert first.submitted == 5 and sweep.computed == 5 and len(list(tmp_path.glob("*.json"))) == 5
    again = CountingExecutor()
    resumed = Sweep(again, tmp_path, log=lambda line: None)
    all_results = resumed.map(train_toy, SPECS)
    assert again.submitted == 3 and resumed.reused == 5 and resumed.computed == 3
    assert all_results[:5] == results
    assert all_results == Sweep(InlineExecutor(), None, log=lambda line: None).map(train_toy, SPECS)


def test_the_cache_key_is_the_configuration():
    a = RunSpec("toy", {"norm": "batch", "lr": 0.1}, 0)
    assert a.key(train_toy) == RunSpec("toy", {"lr": 0.1, "norm": "batch"}, 0).key(train_toy)
    assert a.key(train_toy) == RunSpec("toy", {"norm": "batch", "lr": 0.1}, 0, data_dir="/elsewhere").key(train_toy)
    assert a.key(train_toy) != RunSpec("toy", {"norm": "batch", "lr": 0.2}, 0).key(train_toy)
    assert a.key(train_toy) != RunSpec("toy", {"norm": "batch", "lr": 0.1}, 1).key(train_toy)
    assert a.key(train_toy) != RunSpec("toy", {"norm": "batch", "lr": 0.1}, 0, "mnist").key(train_toy)


def test_a_failing_run_raises_from_the_sweep():
    def broken(spec):
        raise RuntimeError(f"run {spec.seed} failed")

    with pytest.raises(RuntimeError, match="run 0 failed"):
        Sweep(InlineExecutor(), None, log=lambda line: None).map(broken, SPECS[:1])


def test_under_mpi4py_futures_the_results_are_those_of_one_process(tmp_path):
    """`mpiexec -n 3 python -m mpi4py.futures -m normlab experiment ...`: rank 0 runs the experiment, ranks 1
    and 2 its runs; everything but the wall times equals the run in one process."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from optional import require_fashion_mnist

    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not on PATH (install the extra: pip install 'normlab[mpi]')")
    pytest.importorskip("mpi4py")
    require_fashion_mnist()
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
           "NORMLAB_BACKEND": "numpy", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    args = ["experiment", "init-scale", "--quick", "--seeds", "2", "--scale", "0.2", "--no-download"]
    for out, launch in ((tmp_path / "mpi", ["mpiexec", "-n", "3", sys.executable, "-m", "mpi4py.futures"]),
                        (tmp_path / "one", [sys.executable])):
        done = subprocess.run([*launch, "-m", "normlab", *args, "--out", str(out)], env=env, capture_output=True,
                              text=True, timeout=240, check=False)
        assert done.returncode == 0, done.stderr

    def without_times(value):
        if isinstance(value, dict):
            return {k: without_times(v) for k, v in value.items() if k != "seconds"}
        if isinstance(value, list):
            return [without_times(v) for v in value]
        return value

    mpi, one = (json.loads((tmp_path / d / "init-scale" / "results.json").read_text()) for d in ("mpi", "one"))
    assert mpi["executor"] == "MPIPoolExecutor" and one["executor"] == "InlineExecutor"
    assert without_times(mpi["results"]) == without_times(one["results"])


def slow_or_failing(spec: RunSpec) -> dict:
    """Marks its start and end in the config's folder; seed 0 fails after a while, the others take 0.25 s."""
    import pathlib
    import time

    folder = pathlib.Path(spec.config["folder"])
    (folder / f"started-{spec.seed}").touch()
    if spec.seed == 0:
        time.sleep(0.6)
        raise RuntimeError("run 0 failed")
    time.sleep(0.25)
    (folder / f"done-{spec.seed}").touch()
    return {"seed": spec.seed}


def test_a_failing_run_cancels_the_queued_runs_and_caches_the_finished_ones(tmp_path):
    marks, cache = tmp_path / "marks", tmp_path / "cache"
    marks.mkdir()
    specs = [RunSpec("toy", {"folder": str(marks)}, seed) for seed in range(12)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        sweep = Sweep(pool, cache, log=lambda line: None)
        with pytest.raises(RuntimeError, match="run 0 failed"):
            sweep.map(slow_or_failing, specs)
        cached = {s.seed for s in specs if (cache / f"{s.key(slow_or_failing)}.json").exists()}
    done = {int(p.name.split("-")[1]) for p in marks.glob("done-*")}
    started = {int(p.name.split("-")[1]) for p in marks.glob("started-*")}
    assert cached and cached <= done and sweep.computed == len(cached)
    # Runs that had not been handed to a worker were cancelled, not run during the executor's shutdown.
    assert len(started) < len(specs)
    # A rerun reads the finished runs from the cache.
    again = CountingExecutor()
    rerun = Sweep(again, cache, log=lambda line: None)
    with pytest.raises(RuntimeError):
        rerun.map(slow_or_failing, specs)
    assert rerun.reused == len(cached)


def test_a_changed_source_changes_the_cache_key(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "toy_runs.py").write_text("def run(spec):\n    return {'x': 1}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_runs")
    spec = RunSpec("toy", {"a": 1}, 0)
    before = spec.key(module.run)
    assert spec.key(module.run) == before  # the same source, the same key
    (tmp_path / "toy_runs.py").write_text("def run(spec):\n    return {'x': 2}\n")
    module = importlib.reload(module)
    assert spec.key(module.run) != before
    sys.modules.pop("toy_runs")


def test_the_cache_key_covers_the_experiments_modules_a_run_reaches(monkeypatch):
    """noisy-batchnorm's runs train through covariate-shift's code: editing covariate-shift changes their key,
    editing an experiment they do not reach does not."""
    import inspect

    from normlab.experiments import noisy_batchnorm

    spec = RunSpec("noisy-batchnorm", {"a": 1}, 0)
    run = noisy_batchnorm.run
    before = spec.key(run)
    real = inspect.getsource

    def edited(name):
        return lambda obj: real(obj) + ("\n# edited" if getattr(obj, "__name__", "") == name else "")

    monkeypatch.setattr(inspect, "getsource", edited("normlab.experiments.placement"))
    assert spec.key(run) == before
    monkeypatch.setattr(inspect, "getsource", edited("normlab.experiments.covariate_shift"))
    assert spec.key(run) != before


def interrupted_at_seed_3(spec: RunSpec) -> dict:
    if spec.seed == 3:
        raise KeyboardInterrupt  # Ctrl-C during the fourth run
    return {"seed": spec.seed}


def test_an_interrupted_inline_sweep_keeps_every_run_it_finished(tmp_path):
    """With --jobs 1 each run is cached when it finishes, not when the whole sweep does: Ctrl-C in the
    fourth run keeps the first three, stops the sweep (later runs are not started) and a rerun reuses them."""
    specs = [RunSpec("toy", {"n": 1}, seed) for seed in range(6)]
    executor = CountingExecutor()
    sweep = Sweep(executor, tmp_path, log=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        sweep.map(interrupted_at_seed_3, specs)
    assert executor.submitted == 4 and sweep.computed == 3
    rerun = Sweep(CountingExecutor(), tmp_path, log=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        rerun.map(interrupted_at_seed_3, specs)
    assert rerun.reused == 3 and rerun.executor.submitted == 1
