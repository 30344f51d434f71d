"""What every experiment shares: the registry, the run context (output directory, sizes, seeds, data),
training a model with `normlab.train.Trainer` while measuring it every k steps, and the outputs
(results.json, summary.md with markdown tables, PNG plots).

An experiment is a function `run(ctx) -> Report` registered under a name:

    @register_experiment("learning-rate", claim="batch norm allows higher learning rates")
    def run(ctx: Context) -> Report: ...

`run_experiment(name, ...)` builds the context, runs it with NumPy's BLAS on one thread (`normlab.blas`),
and writes OUT/NAME/results.json and summary.md (the plots are written by the experiment through
`ctx.save_figure`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normlab.blas import limited_blas_threads
from normlab.checks import check_non_negative_int, check_positive_int
from normlab.experiments.stats import VERDICT_RULE, Interval, format_difference
from normlab.experiments.status import run_status
from normlab.experiments.sweep import InlineExecutor, RunFunction, RunSpec, Sweep, make_executor
from normlab.files import atomic_write_bytes
from normlab.models import FullyConnectedNet
from normlab.nn import Module
from normlab.optim import Optimizer, Schedule
from normlab.train.history import History
from normlab.train.plots import pyplot, save_figure
from normlab.train.run import PreparedData
from normlab.train.trainer import StepInfo, Trainer

RESULTS = "results.json"
SUMMARY = "summary.md"
DATASETS = ("fashion-mnist", "mnist", "cifar10")


@dataclass(frozen=True)
class Report:
    """What an experiment returns.

    - settings: everything that decides the result (sizes, learning rates, ...), JSON-able.
    - results: the measurements, JSON-able (NaN and infinities become null in results.json).
    - summary: the markdown body of summary.md: the setting in words, tables, and what they show.
    """

    settings: dict[str, Any]
    results: dict[str, Any]
    summary: str


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str  # the claim it tests, in one line (listed by `normlab experiment --help`)
    run: Callable[[Context], Report]


EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(name: str, claim: str) -> Callable[[Callable[[Context], Report]], Callable[[Context], Report]]:
    def decorate(run: Callable[[Context], Report]) -> Callable[[Context], Report]:
        if name in EXPERIMENTS:
            raise ValueError(f"an experiment named {name!r} is already registered")
        EXPERIMENTS[name] = Experiment(name, claim, run)
        return run

    return decorate


@dataclass
class Context:
    """One experiment's run: where its files go, how big it is, its seeds, and where its runs go.

    - quick: the small version (about a minute); otherwise the full run.
    - scale: multiplies the quick version's counts (steps, examples); tests pass less than 1 to run the
      same code on even less. The full run ignores it.
    - seeds: every setting is run once per seed (`runs`); a seed varies initialization, data order and
      the train/validation split.
    - sweep: runs the runs (an executor and a cache, see `normlab.experiments.sweep`); None runs them here.
    """

    name: str
    out_dir: Path
    quick: bool = False
    scale: float = 1.0
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = True
    seeds: tuple[int, ...] = (0,)
    sweep: Sweep | None = None
    log: Callable[[str], None] = print
    figures: list[str] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return self.seeds[0]

    def count(self, full: int, quick: int, minimum: int = 1) -> int:
        """`full` in the full run; `quick` times scale (at least `minimum`) in the quick one."""
        if not self.quick:
            return full
        return max(minimum, round(quick * self.scale))

    def pick(self, full, quick):
        """A choice (a grid, a list of sizes) that differs between the full and the quick run."""
        return quick if self.quick else full

    def rng(self, *labels: object) -> np.random.Generator:
        """A generator determined by the first seed and the labels."""
        words = [zlib.crc32(str(label).encode()) for label in labels]
        return np.random.default_rng([self.seed, *words])

    def spec(self, config: dict[str, Any], seed: int) -> RunSpec:
        return RunSpec(self.name, config, seed, self.dataset, self.data_dir, self.download)

    def runs(self, function: RunFunction, configs: Sequence[dict[str, Any]], parallel: bool = True) -> list[list[Any]]:
        """function(spec) for every configuration and every seed, through the sweep (in parallel, cached).

        Inputs: configs, JSON-able dicts (everything a run depends on besides the seed); parallel=False runs
        them one after another in this process (timings, which other runs would disturb), still cached.
        Returns: results[i][j], the result of configs[i] at seeds[j].
        """
        specs = [self.spec(dict(config), seed) for config in configs for seed in self.seeds]
        sweep = self.sweep or Sweep(InlineExecutor(), None, self.log)
        if not parallel:
            sweep = Sweep(InlineExecutor(), sweep.cache_dir, sweep.log)
        flat = sweep.map(function, specs)
        if not parallel and self.sweep is not None:
            self.sweep.computed += sweep.computed
            self.sweep.reused += sweep.reused
        k = len(self.seeds)
        return [flat[i * k:(i + 1) * k] for i in range(len(configs))]

    def save_figure(self, fig, filename: str) -> None:
        save_figure(fig, self.out_dir / filename)
        self.figures.append(filename)


# -- training ---------------------------------------------------------------------------------------

Probe = Callable[[Trainer], dict[str, Any]]


@dataclass
class TrainedRun:
    """A finished training run: its status ("completed" or "diverged", see `Trainer.fit`), the Trainer's
    history (loss per step, metrics per epoch), the probe's measurements every `every` steps (each a dict
    with "step"), and the wall time."""

    status: str
    history: History
    probes: list[dict[str, Any]]
    steps: int
    seconds: float
    trainer: Trainer

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def series(self, key: str) -> tuple[list[int], list[Any]]:
        """(steps, values) of one probed quantity."""
        return [p["step"] for p in self.probes], [p[key] for p in self.probes]


def mlp(spec: RunSpec, data: PreparedData, hidden: Sequence[int], **options) -> FullyConnectedNet:
    """The run's fully connected network for `data` (its input size and classes), with hidden layers of
    `hidden` units and its initial weights drawn from the run's generator "init" (the same draw in every arm
    of a seed); `options` go to FullyConnectedNet."""
    return FullyConnectedNet(int(np.prod(data.input_shape)), hidden, len(data.classes), rng=spec.rng("init"),
                             **options)


def train(model: Module, optimizer: Optimizer, data: PreparedData, *, batch_size: int, rng: np.random.Generator,
          steps: int | None = None, epochs: int | None = None, schedule: Schedule | None = None,
          probe: Probe | None = None, every: int = 0, at: Sequence[int] = (),
          train_eval_size: int = 10000) -> TrainedRun:
    """Train with the Trainer for `steps` steps or `epochs` epochs (exactly one of them), calling
    probe(trainer) at step 0 (before training), after every `every`-th step and the steps listed in `at`,
    and after the last one.

    The Trainer evaluates after every epoch (accuracy on up to train_eval_size training examples and on
    the validation set, in eval mode); a NaN or infinite loss stops the run with status "diverged". When
    the training set would leave a last batch of one example, its last example is left out.
    """
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps and epochs, got steps={steps!r}, epochs={epochs!r}")
    if len(data.x_train) % batch_size == 1:  # a last batch of one example cannot be batch-normalized
        data = dataclasses.replace(data, x_train=data.x_train[:-1], y_train=data.y_train[:-1])
    probes: list[dict[str, Any]] = []

    def measure(trainer: Trainer, step: int) -> None:
        probes.append({"step": step, **probe(trainer)})

    extra = set(at)

    def callback(trainer: Trainer, info: StepInfo) -> None:
        if (every and info.iteration % every == 0) or info.iteration in extra:
            measure(trainer, info.iteration)

    trainer = Trainer(model, optimizer, data.x_train, data.y_train, data.x_val, data.y_val,
                      epochs=epochs or math.ceil(steps / -(-len(data.x_train) // batch_size)), batch_size=batch_size,
                      rng=rng, schedule=schedule, callbacks=[callback] if probe is not None else [], progress=False,
                      log=lambda line: None, train_eval_size=train_eval_size)
    if probe is not None:
        measure(trainer, 0)
    started = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # a run that blows up is reported as "diverged"
        fit = trainer.fit(max_steps=steps)
    if probe is not None and fit.status != "diverged" and probes[-1]["step"] != trainer.iteration:
        measure(trainer, trainer.iteration)
    status = "diverged" if fit.status == "diverged" else "completed"
    return TrainedRun(status, fit.history, probes, trainer.iteration, time.perf_counter() - started, trainer)


def status_of(run: TrainedRun, key: str | None, chance: float) -> str:
    """The run's status (`normlab.experiments.status.run_status`) from its probed `key` (accuracy) or, when
    key is None, from its validation accuracy after each epoch."""
    if run.diverged:
        return f"diverged at step {run.steps}"
    if key is None:
        per_epoch = run.trainer.steps_per_epoch
        epochs = run.history.epochs
        return run_status([e.epoch * per_epoch for e in epochs], [e.val_acc for e in epochs], chance)
    return run_status(*run.series(key), chance)


def first_step_reaching(steps: Sequence[int], values: Sequence[float | None], target: float) -> int | None:
    """The first step whose value is >= target, or None if none is."""
    for step, value in zip(steps, values):
        if value is not None and value >= target:
            return step
    return None


def steps_to_cell(runs: Sequence[dict], threshold: float) -> str:
    """ "412 (2/3)": the mean over the runs that reached `threshold` of the first step they did (each run's
    r["steps_to"][str(threshold)], None: never), and how many did; "never (0/3)"."""
    got = [r["steps_to"][str(threshold)] for r in runs if r["steps_to"][str(threshold)] is not None]
    return f"{np.mean(got):.0f} ({len(got)}/{len(runs)})" if got else f"never (0/{len(runs)})"


# -- outputs ----------------------------------------------------------------------------------------

def plain_json(value: Any) -> Any:
    """`value` with NumPy scalars and arrays turned into Python numbers and lists, tuples into lists, and
    every NaN or infinity into None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def fmt(value: float | None, spec: str = ".4f", none: str = "—") -> str:
    """A number for a table; `none` for a missing (or non-finite) one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return none
    return format(value, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table. `align` has one letter per column, "l" or "r" (default: the first column
    left, the others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError(f"every row and the alignment need {len(headers)} columns")
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = [headers, rule, *[[str(c) for c in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def comparison_table(comparisons: dict[str, dict], measure: str, anchor: Callable[[str, dict], str],
                     spec: str = "+.1f", anchor_header: str = "anchor") -> str:
    """The judged claims as a table: per comparison (name -> `Comparison.to_dict()` of a difference of
    fractions) its name, the difference in points, anchor(name, comparison), the predicted sign, the verdict."""
    rows = [[name, format_difference(Interval(**c["difference"]), spec, 100, " points"), anchor(name, c),
             "> 0" if c["predicted"] == "positive" else "< 0", c["verdict"]] for name, c in comparisons.items()]
    return markdown_table([measure, "ours: mean [95% CI]", anchor_header, "claim predicts", "verdict"], rows)


def nested(configs: Sequence[dict[str, Any]], results: Sequence[Any], *keys: str) -> dict:
    """out[str(config[keys[0]])][str(config[keys[1]])]... = result, for each config and its result."""
    out: dict = {}
    for config, result in zip(configs, results):
        inner = out
        for key in keys[:-1]:
            inner = inner.setdefault(str(config[key]), {})
        inner[str(config[keys[-1]])] = result
    return out


def command_line(ctx: Context) -> str:
    """The command that repeats this run."""
    parts = ["normlab experiment", ctx.name]
    if ctx.quick:
        parts.append("--quick")
    if ctx.dataset != "fashion-mnist":
        parts.append(f"--dataset {ctx.dataset}")
    parts.append(f"--seeds {len(ctx.seeds)}")
    if ctx.seed:
        parts.append(f"--seed {ctx.seed}")
    parts.append(f"--out {ctx.out_dir.parent}")
    return " ".join(parts)


RUNS_DIR = "runs"  # OUT/NAME/runs/: the cache of finished runs


class ResultsExist(ValueError):
    """The output directory already holds a finished result and overwriting was not asked for."""


def check_out_dir(name: str, out: str | Path, overwrite: bool) -> Path:
    """OUT/NAME, after checking that writing there loses nothing: raises ResultsExist when it already
    holds a results.json and overwrite is False."""
    out_dir = Path(out) / name
    if not overwrite and (out_dir / RESULTS).exists():
        raise ResultsExist(f"{out_dir / RESULTS} already exists: pass --overwrite to replace it (its finished runs "
                           f"in {out_dir / RUNS_DIR}/ are reused), or choose another --out")
    return out_dir


def run_experiment(name: str, out: str | Path, *, quick: bool = False, scale: float = 1.0,
                   dataset: str = "fashion-mnist", data_dir: str | None = None, download: bool = True, seed: int = 0,
                   seeds: int | None = None, jobs: int = 1, overwrite: bool = False,
                   executor=None, log: Callable[[str], None] = print) -> Path:
    """Run the experiment `name` and write out/name/: results.json, summary.md and the plots. Returns
    that directory.

    - seeds: how many seeds (seed, seed + 1, ...); default 5, or 2 with quick.
    - jobs: local worker processes for the runs (ignored when `executor` is given or under mpi4py.futures).
    - overwrite: replace an existing out/name/results.json (otherwise ResultsExist is raised). Finished
      runs cached in out/name/runs/ are reused either way: delete that folder to recompute them.
    """
    import normlab.experiments  # noqa: F401  (registers every experiment)

    if name not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {sorted(EXPERIMENTS)}, got {name!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    check_non_negative_int("seed", seed)  # NumPy's seeds are non-negative
    seeds = (2 if quick else 5) if seeds is None else seeds
    check_positive_int("seeds", seeds)
    experiment = EXPERIMENTS[name]
    out_dir = check_out_dir(name, out, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    own_executor = executor is None
    executor = make_executor(jobs) if own_executor else executor
    sweep = Sweep(executor, out_dir / RUNS_DIR, log)
    ctx = Context(name, out_dir, quick=quick, scale=scale, dataset=dataset, data_dir=data_dir, download=download,
                  seeds=tuple(range(seed, seed + seeds)), sweep=sweep, log=log)
    started = time.perf_counter()
    try:
        with limited_blas_threads(1) as threads:  # small matrices: see normlab.blas
            report = experiment.run(ctx)
    finally:
        if own_executor:
            executor.shutdown()
    seconds = time.perf_counter() - started
    results = {"experiment": name, "claim": experiment.claim, "command": command_line(ctx), "quick": quick,
               "scale": scale if quick else 1.0, "dataset": dataset, "seed": seed, "seeds": list(ctx.seeds),
               "seconds": seconds, "runs_computed": sweep.computed, "runs_reused": sweep.reused,
               "executor": type(executor).__name__, "blas_threads": threads,
               "figures": ctx.figures, "settings": report.settings, "results": report.results}
    text = json.dumps(plain_json(results), indent=1, allow_nan=False) + "\n"
    atomic_write_bytes(out_dir / RESULTS, text.encode())
    figures = "\n".join(f"![{f}]({f})" for f in ctx.figures)
    reused = f", {sweep.reused} of {sweep.reused + sweep.computed} runs read from the cache" if sweep.reused else ""
    summary = (f"# {name}: {experiment.claim}\n\n{report.summary.strip()}\n\n{VERDICT_RULE}\n\n{figures}\n\n"
               f"Made by `{command_line(ctx)}` in {seconds:.0f} s ({type(executor).__name__}{reused})"
               f"{' (quick version)' if quick else ''}.\n")
    atomic_write_bytes(out_dir / SUMMARY, summary.encode())
    return out_dir


__all__ = ["DATASETS", "EXPERIMENTS", "Context", "Experiment", "Report", "ResultsExist", "RunSpec", "TrainedRun",
           "check_out_dir", "first_step_reaching", "fmt", "markdown_table", "plain_json", "pyplot",
           "register_experiment", "run_experiment", "status_of", "train"]
