"""An experiment's runs (settings x seeds) through a `concurrent.futures` executor, each run cached by its
configuration so that an interrupted sweep resumes.

- The executor: `mpi4py.futures.MPIPoolExecutor` when the program was launched under it
  (`mpiexec -n K python -m mpi4py.futures -m normlab experiment all`: rank 0 runs the experiments, the
  other K - 1 ranks run their runs), otherwise a `ProcessPoolExecutor` of `jobs` local processes, or, with
  jobs=1, every run in this process, one after the other (`InlineExecutor`).
- A run is a function of its `RunSpec` (the configuration and the seed) only: every generator it uses is
  derived from the seed and labels, and NumPy's BLAS runs on one thread. So its result is the same whatever
  the executor, the number of workers and the order in which runs finish.
- The cache: a finished run's result is written to `cache_dir/<key>.json`, where the key is a hash of the
  experiment, the run function, the source of the run function's module and the RunSpec. A sweep first
  looks there; results always pass through JSON (also when freshly computed), so a cached and a recomputed
  result are the same objects.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import inspect
import json
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normlab.blas import limited_blas_threads
from normlab.checks import check_positive_int
from normlab.files import atomic_write_bytes


@dataclass(frozen=True)
class RunSpec:
    """Everything one run depends on: the experiment, the configuration of the run, its seed, and the data."""

    experiment: str
    config: dict[str, Any]
    seed: int
    dataset: str = "fashion-mnist"
    data_dir: str | None = field(default=None, compare=False)  # where to look, not what is found
    download: bool = field(default=True, compare=False)

    def rng(self, *labels: object) -> np.random.Generator:
        """A generator determined by the seed and the labels: arms of a comparison that should share an
        initialization or a data order ask for the same labels."""
        words = [zlib.crc32(str(label).encode()) for label in labels]
        return np.random.default_rng([self.seed, *words])

    def data(self, n_train: int | None, n_val: int, n_test: int | None = None):
        """The dataset's first n_train + n_val training examples (all when n_train is None), shuffled by
        the seed and split into n_train for training and n_val for validation, and the first n_test test
        examples; standardized with the training split's statistics (as `normlab train` does). Returns a
        `PreparedData`."""
        from normlab.data import Standardizer, train_val_split
        from normlab.train.run import PreparedData

        ds = load_dataset_once(self.dataset, self.data_dir, self.download)
        limit = None if n_train is None else n_train + n_val
        x, y = ds.x_train[:limit], ds.y_train[:limit]
        x_train, y_train, x_val, y_val = train_val_split(x, y, n_val, self.rng("split"))
        standardize = Standardizer.fit(x_train)
        x_test, y_test = ds.x_test[:n_test], ds.y_test[:n_test]
        return PreparedData(standardize(x_train), y_train, standardize(x_val), y_val, standardize(x_test), y_test,
                            ds.classes)

    def key(self, function: Callable) -> str:
        """The cache key: a hash of the run function's name, of its module's source (a changed experiment
        does not reuse the runs of the previous version) and of everything the result depends on."""
        identity = {"function": f"{function.__module__}.{function.__qualname__}", "experiment": self.experiment,
                    "config": self.config, "seed": self.seed, "dataset": self.dataset,
                    "source": module_source_hash(function)}
        backend = os.environ.get("NORMLAB_BACKEND")
        if backend:  # a forced kernel backend changes the last bits of every result (and every timing)
            identity["backend"] = backend
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def module_source_hash(function: Callable) -> str:
    """A hash of the source of the module that defines `function` and of every experiments module it reaches
    through its names (noisy-batchnorm's runs train through covariate-shift's code, so an edit there must not
    reuse noisy-batchnorm's cached runs); "unknown" where a source cannot be read (a function defined
    interactively)."""
    try:
        sources = [inspect.getsource(sys.modules[name]) for name in sorted(_experiment_modules(function.__module__))]
    except (KeyError, OSError, TypeError):
        return "unknown"
    return hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]


def _experiment_modules(name: str) -> set[str]:
    """`name` and the modules of normlab.experiments that its globals come from, transitively."""
    package = __name__.rpartition(".")[0]
    found, pending = set(), [name]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.add(current)
        for value in vars(sys.modules[current]).values():
            origin = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(origin, str) and origin.startswith(package + ".") and origin in sys.modules:
                pending.append(origin)
    return found


@functools.lru_cache(maxsize=2)
def load_dataset_once(name: str, data_dir: str | None, download: bool):
    """`normlab.data.load_dataset`, once per process: a worker runs many runs on the same files."""
    from normlab.data import load_dataset

    return load_dataset(name, data_dir, download=download)


RunFunction = Callable[[RunSpec], dict[str, Any]]


def json_round_trip(value: Any) -> Any:
    """`value` as it reads back from results.json (NumPy values to Python, NaN and infinities to None)."""
    from normlab.experiments.base import plain_json

    return json.loads(json.dumps(plain_json(value), allow_nan=False))


def execute(function: RunFunction, spec: RunSpec) -> Any:
    """One run, in whichever process the executor chose: BLAS on one thread, the result as JSON sees it."""
    with limited_blas_threads(1), np.errstate(over="ignore", invalid="ignore"):
        return json_round_trip(function(spec))


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in this process (`--jobs 1`)."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001  (raised by future.result(), as with any executor; Ctrl-C stops the sweep)
            future.set_exception(e)
        return future


def under_mpi_futures() -> bool:
    """True when launched as `mpiexec -n K python -m mpi4py.futures ...` with K > 1."""
    if "mpi4py.futures" not in sys.modules:
        return False
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_size() > 1


def make_executor(jobs: int) -> concurrent.futures.Executor:
    """The executor of a sweep (see the module docstring)."""
    check_positive_int("jobs", jobs)
    if under_mpi_futures():
        from mpi4py.futures import MPIPoolExecutor

        return MPIPoolExecutor()
    if jobs == 1:
        return InlineExecutor()
    return concurrent.futures.ProcessPoolExecutor(max_workers=jobs)


@dataclass
class Sweep:
    """Runs RunSpecs through an executor, reusing and filling a cache directory.

    - executor: where runs go (see `make_executor`); the caller shuts it down.
    - cache_dir: one JSON file per finished run (None: no cache).
    - log: told about each run as it finishes.
    """

    executor: concurrent.futures.Executor
    cache_dir: Path | None = None
    log: Callable[[str], None] = print
    computed: int = 0  # runs computed by this sweep
    reused: int = 0  # runs read from the cache

    def map(self, function: RunFunction, specs: Sequence[RunSpec]) -> list[Any]:
        """The results of function(spec) for every spec, in the order of `specs`. Each run is cached as soon
        as it finishes, so an interrupted or failed sweep resumes from every run it finished."""
        results: list[Any] = [None] * len(specs)
        pending: dict[concurrent.futures.Future, int] = {}
        recorded: set[concurrent.futures.Future] = set()

        def finish(future: concurrent.futures.Future) -> None:
            i = pending[future]
            results[i] = future.result()  # raises the run's error
            self._record(function, specs[i], results[i])
            recorded.add(future)

        to_run = []
        for i, spec in enumerate(specs):
            cached = self._read(function, spec)
            if cached is not None:
                results[i] = cached["result"]
                self.reused += 1
            else:
                to_run.append(i)
        try:
            for i in to_run:
                future = self.executor.submit(execute, function, specs[i])
                pending[future] = i
                if future.done():  # the inline executor (--jobs 1) has run it already: cache it now
                    finish(future)
            for future in concurrent.futures.as_completed(pending):
                if future not in recorded:
                    finish(future)
        except BaseException:
            # A run failed (or the sweep was interrupted): runs not yet started are cancelled, so that the
            # executor's shutdown does not run them all to the end, and the runs already finished are cached,
            # so that a rerun after the fix resumes from them. Then the error goes on.
            for future in pending:
                future.cancel()
            for future, i in pending.items():
                if future in recorded or not future.done() or future.cancelled():
                    continue
                if future.exception() is None:
                    self._record(function, specs[i], future.result())
            raise
        return results

    def _record(self, function: RunFunction, spec: RunSpec, result: Any) -> None:
        self._write(function, spec, result)
        self.computed += 1
        self.log(f"{spec.experiment}: run {describe_config(spec)} done")

    def _path(self, function: RunFunction, spec: RunSpec) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{spec.key(function)}.json"

    def _read(self, function: RunFunction, spec: RunSpec) -> dict | None:
        path = self._path(function, spec)
        if path is None or not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is recomputed (entries are written atomically, so this is rare)
        return record if record.get("key") == spec.key(function) else None

    def _write(self, function: RunFunction, spec: RunSpec, result: Any) -> None:
        path = self._path(function, spec)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"key": spec.key(function), "function": f"{function.__module__}.{function.__qualname__}",
                  "spec": asdict(spec), "result": result}
        atomic_write_bytes(path, (json.dumps(json_round_trip(record)) + "\n").encode())


def describe_config(spec: RunSpec) -> str:
    parts = [f"{k}={v}" for k, v in spec.config.items() if not isinstance(v, (list, dict))]
    return ", ".join(parts[:6]) + f", seed {spec.seed}"
