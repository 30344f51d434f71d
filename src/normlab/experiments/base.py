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
from normlab.files import atomic_write_bytes
from normlab.nn import Module
from normlab.optim import Optimizer, Schedule
from normlab.train.history import History
from normlab.train.plots import pyplot, save_figure
from normlab.train.run import PreparedData, prepare_data
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
    """One experiment's run: where its files go and how big it is.

    - quick: the small version (about a minute); otherwise the full run.
    - scale: multiplies the quick version's counts (steps, examples); tests pass less than 1 to run the
      same code on even less. The full run ignores it.
    - seed: every generator is derived from it and a label (`rng`), so a run is a function of the seed.
    """

    name: str
    out_dir: Path
    quick: bool = False
    scale: float = 1.0
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = True
    seed: int = 0
    log: Callable[[str], None] = print
    figures: list[str] = field(default_factory=list)

    def count(self, full: int, quick: int, minimum: int = 1) -> int:
        """`full` in the full run; `quick` times scale (at least `minimum`) in the quick one."""
        if not self.quick:
            return full
        return max(minimum, round(quick * self.scale))

    def pick(self, full, quick):
        """A choice (a grid, a list of sizes) that differs between the full and the quick run."""
        return quick if self.quick else full

    def rng(self, *labels: object) -> np.random.Generator:
        """A generator determined by the seed and the labels: the same labels give the same stream, so
        configurations that should share an initialization or a data order ask for the same labels."""
        words = [zlib.crc32(str(label).encode()) for label in labels]
        return np.random.default_rng([self.seed, *words])

    def data(self, n_train: int | None, n_val: int, n_test: int | None = None) -> PreparedData:
        """The dataset's first n_train + n_val training examples (all of them when n_train is None),
        split into n_train for training and n_val for validation, and the first n_test test examples;
        standardized with the training split's statistics."""
        from normlab.train.config import TrainConfig

        limit = None if n_train is None else n_train + n_val
        config = TrainConfig(dataset=self.dataset, limit=limit, val_size=n_val)
        data = prepare_data(config, self.rng("split"), self.data_dir, self.download)
        if n_test is not None:
            data = dataclasses.replace(data, x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])
        return data

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


def first_step_reaching(steps: Sequence[int], values: Sequence[float | None], target: float) -> int | None:
    """The first step whose value is >= target, or None if none is."""
    for step, value in zip(steps, values):
        if value is not None and value >= target:
            return step
    return None


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


def command_line(ctx: Context) -> str:
    """The command that repeats this run."""
    parts = ["normlab experiment", ctx.name]
    if ctx.quick:
        parts.append("--quick")
    if ctx.dataset != "fashion-mnist":
        parts.append(f"--dataset {ctx.dataset}")
    if ctx.seed:
        parts.append(f"--seed {ctx.seed}")
    parts.append(f"--out {ctx.out_dir.parent}")
    return " ".join(parts)


def run_experiment(name: str, out: str | Path, *, quick: bool = False, scale: float = 1.0,
                   dataset: str = "fashion-mnist", data_dir: str | None = None, download: bool = True, seed: int = 0,
                   log: Callable[[str], None] = print) -> Path:
    """Run the experiment `name` and write out/name/: results.json, summary.md and the plots. Returns
    that directory."""
    import normlab.experiments  # noqa: F401  (registers every experiment)

    if name not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {sorted(EXPERIMENTS)}, got {name!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    experiment = EXPERIMENTS[name]
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(name, out_dir, quick=quick, scale=scale, dataset=dataset, data_dir=data_dir, download=download,
                  seed=seed, log=log)
    started = time.perf_counter()
    with limited_blas_threads(1) as threads:  # small matrices: see normlab.blas
        report = experiment.run(ctx)
    seconds = time.perf_counter() - started
    results = {"experiment": name, "claim": experiment.claim, "command": command_line(ctx), "quick": quick,
               "scale": scale if quick else 1.0, "dataset": dataset, "seed": seed, "seconds": seconds, "blas_threads": threads,
               "figures": ctx.figures, "settings": report.settings, "results": report.results}
    text = json.dumps(plain_json(results), indent=1, allow_nan=False) + "\n"
    atomic_write_bytes(out_dir / RESULTS, text.encode())
    figures = "\n".join(f"![{f}]({f})" for f in ctx.figures)
    summary = (f"# {name}: {experiment.claim}\n\n{report.summary.strip()}\n\n{figures}\n\n"
               f"Made by `{command_line(ctx)}` in {seconds:.0f} s"
               f"{' (quick version)' if quick else ''}.\n")
    atomic_write_bytes(out_dir / SUMMARY, summary.encode())
    return out_dir


__all__ = ["DATASETS", "EXPERIMENTS", "Context", "Experiment", "Report", "TrainedRun", "first_step_reaching",
           "fmt", "markdown_table", "plain_json", "pyplot", "register_experiment", "run_experiment", "train"]
