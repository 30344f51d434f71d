"""Execute a TrainConfig with the NumPy models (or their torch / TensorFlow twins, `config.framework`):
data -> model -> optimizer -> Trainer -> run directory.

The run directory gets config.json, preprocessing.json (input shape, class names, the standardization's
statistics) and, for a data-parallel run, distributed.json at the start; checkpoint.safetensors,
model.safetensors, history.json, history.csv and iterations.csv every epoch (see `normlab.train.trainer`);
curves.png at the end, or when stopped; with tensorboard=True, event files in tensorboard/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from normlab.data import Augment, Standardizer, load_dataset, train_val_split
from normlab.files import atomic_write_bytes, atomic_write_json, remove_stale_temporaries
from normlab.models import build_model
from normlab.models.regularization import decay_groups
from normlab.nn import Module, recompute_batchnorm_statistics
from normlab.nn.precise_bn import running_statistics_layers
from normlab.optim import OPTIMIZERS, LinearWarmup, Optimizer, Schedule, StepDecay
from normlab.train.checkpoint import load_meta, save_model
from normlab.train.config import TrainConfig
from normlab.train.history import HISTORY_CSV, ITERATIONS_CSV, save_history
from normlab.train.plots import curves_figure, save_figure
from normlab.train.tensorboard import TENSORBOARD_DIR
from normlab.train.trainer import BEST_MODEL, CHECKPOINT, HISTORY, Callback, FitResult, Trainer, named_schedule, plural

if TYPE_CHECKING:
    from normlab.distributed import Communicator

CONFIG = "config.json"
CURVES = "curves.png"
PREPROCESSING = "preprocessing.json"  # what `normlab.train.load_run` needs besides the config and weights
DISTRIBUTED = "distributed.json"  # a data-parallel run's number of processes and batch norm kind


@dataclass(frozen=True)
class PreparedData:
    """Standardized float32 arrays: x (N, C, H, W), y (N,) int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    standardizer: Standardizer | None = None  # fitted on the training split; maps raw images to x
    identity: str = ""  # sha256 of the dataset as loaded (`data_identity`): what a resumed run must find again

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


@dataclass
class RunResult(FitResult):
    test_acc: float | None
    run_dir: Path


def prepare_data(config: TrainConfig, rng: np.random.Generator, data_dir: str | os.PathLike | None = None,
                 download: bool = True) -> PreparedData:
    """Load the dataset, take the first `limit` training examples, hold out val_size of them (by default
    5000 or a tenth, whichever is fewer), and standardize every split with the training split's
    per-channel statistics."""
    ds = load_dataset(config.dataset, data_dir, download=download)
    x, y = ds.x_train, ds.y_train
    if config.limit is not None:
        x, y = x[:config.limit], y[:config.limit]
    val_size = config.val_size if config.val_size is not None else min(5000, len(x) // 10)
    x_train, y_train, x_val, y_val = train_val_split(x, y, val_size, rng)
    standardize = Standardizer.fit(x_train)
    return PreparedData(standardize(x_train), y_train, standardize(x_val), y_val, standardize(ds.x_test),
                        ds.y_test, ds.classes, standardize,
                        data_identity(ds.x_train, ds.y_train, ds.x_test, ds.y_test))


def run_seeds(config: TrainConfig) -> list[np.random.SeedSequence]:
    """The seeds of a run's (split, initialization, training order) generators, from config.seed."""
    return np.random.SeedSequence(config.seed).spawn(3)


def preprocessing_record(data: PreparedData) -> dict:
    """preprocessing.json: one sample's shape, the class names and the Standardizer's statistics (float64,
    exact in JSON), so a saved model can be used without loading the training data again."""
    std = data.standardizer
    return {"input_shape": list(data.input_shape), "classes": list(data.classes),
            "standardizer": None if std is None else {"mean": std.mean.tolist(), "std": std.std.tolist()}}


def data_identity(*arrays: np.ndarray) -> str:
    """sha256 over the arrays' shapes, dtypes and bytes (about 0.1 s for Fashion-MNIST): two data directories
    give the same identity exactly when they hold the same examples in the same order."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(f"{a.shape}{a.dtype.str}".encode())
        digest.update(np.ascontiguousarray(a).data)
    return "sha256:" + digest.hexdigest()


CONFUSION = "confusion.png"  # written by `normlab evaluate`
# What a run directory holds: what training writes, and what `normlab evaluate` and `normlab export` write
# from its weights (model[.folded].onnx|.pt2|.keras), which would describe the old weights after an overwrite.
RUN_FILES = (CONFIG, PREPROCESSING, DISTRIBUTED, CHECKPOINT, BEST_MODEL, HISTORY, HISTORY_CSV, ITERATIONS_CSV, CURVES,
             CONFUSION, TENSORBOARD_DIR)
RUN_FILE_PATTERNS = ("model*.onnx", "model*.pt2", "model*.keras")


def run_files(run_dir: Path) -> list[Path]:
    """The files (and tensorboard/) of a run that are in run_dir: what a new run may not land on."""
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    return found + sorted(p for pattern in RUN_FILE_PATTERNS for p in run_dir.glob(pattern))


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked: a file, an existing run, a checkpoint of another run."""


def check_run_directory(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Before anything is loaded or written: run_dir must be a directory (or not exist yet), and a new run
    must not land on an earlier one unless `overwrite` (its checkpoint would be taken for this run's)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is a file, not a directory")
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise RunDirectoryError(f"{run_dir}: no {CHECKPOINT} to resume from")
        return
    earlier = [p.name for p in run_files(run_dir)] if run_dir.is_dir() else []
    if earlier and not overwrite:
        raise RunDirectoryError(f"{run_dir} already holds a run's files ({', '.join(earlier)}); resume it, "
                                "choose another directory, or overwrite it (normlab train --overwrite)")


def check_resume_matches(checkpoint: Path, expected: dict) -> None:
    """Refuse to resume when the checkpoint was made with another configuration or data, naming the
    difference (an edited config.json, another data directory). Checkpoints older than this record pass."""
    saved = load_meta(checkpoint).get("depends_on")
    if saved is None:
        return
    differences = []
    old_config, new_config = saved.get("config", {}), expected["config"]
    for key in sorted(set(old_config) | set(new_config)):
        if old_config.get(key) != new_config.get(key):
            differences.append(f"{key} was {old_config.get(key)!r}, {CONFIG} now says {new_config.get(key)!r}")
    if saved.get("data") != expected["data"]:
        differences.append(f"the data differ (dataset identity {str(saved.get('data'))[:19]}... then, "
                           f"{expected['data'][:19]}... now)")
    if differences:
        raise RunDirectoryError(f"{checkpoint}: cannot resume: the run was made with other settings: "
                                + "; ".join(differences) + ". Resume with what the run began with.")


def build_optimizer(config: TrainConfig, model: Module) -> Optimizer:
    """The configured optimizer over the model's parameters; weight decay reaches only the weights."""
    cls = OPTIMIZERS[config.optimizer]
    kwargs = {"lr": config.lr}
    if config.optimizer == "sgd":
        kwargs.update(momentum=config.momentum, nesterov=config.nesterov)
    params = decay_groups(model, config.weight_decay) if config.weight_decay else model.parameters()
    return cls(params, **kwargs, weight_decay=0.0)


def build_schedule(config: TrainConfig, steps_per_epoch: int) -> Schedule:
    if config.schedule == "step":
        schedule = StepDecay(config.step_epochs * steps_per_epoch, config.step_gamma)
    else:
        schedule = named_schedule(config.schedule, config.epochs * steps_per_epoch)
    warmup = round(config.warmup_epochs * steps_per_epoch)
    return LinearWarmup(warmup, schedule) if warmup else schedule


def run_training(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
                 data_dir: str | os.PathLike | None = None, download: bool = True, progress: bool = True,
                 log: Callable[[str], None] = print, callbacks: Sequence[Callback] = (),
                 max_steps: int | None = None, comm: Communicator | None = None,
                 sync_batchnorm: bool = True, tensorboard: bool = False, overwrite: bool = False) -> RunResult:
    """Train as `config` says, writing the run directory. With resume=True, continue the run saved in
    run_dir (its checkpoint.safetensors); the configuration must be the one it was started with.

    comm: train data-parallel over these processes (`normlab.distributed.world()`; every process calls
    run_training with the same arguments, and only rank 0 writes the run directory and logs), with
    SyncBatchNorm unless sync_batchnorm=False; config.batch_size is the global batch. None: this process
    alone. A comm of one process trains exactly as None does.
    tensorboard: also write TensorBoard event files into run_dir/tensorboard (`normlab.train.tensorboard`).

    A new run refuses a run_dir that holds an earlier run unless overwrite=True (which deletes that run's
    files first); a resumed one refuses a checkpoint made with another configuration or data. The run
    directory is created only once the data are loaded, so a failed download leaves none behind.
    """
    run_dir = Path(run_dir)
    root = comm is None or comm.is_root
    if tensorboard and root:  # a missing writer is said before anything is loaded or written
        from normlab.train.tensorboard import import_tensorboardx

        import_tensorboardx()
    if root:
        check_run_directory(run_dir, resume=resume, overwrite=overwrite)
    split_seed, init_seed, train_seed = run_seeds(config)
    # Every process loads the whole data set and draws the same split, weights, order and augmentation.
    data = prepare_data(config, np.random.default_rng(split_seed), data_dir, download)
    # What the checkpoints' state depends on, recorded in them and compared on resume.
    depends_on = {"config": json.loads(config.to_json()), "data": data.identity}
    check_precise_bn_size(config, len(data.x_train))
    if root:
        if resume:
            check_resume_matches(run_dir / CHECKPOINT, depends_on)
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # left by a process killed while writing
        if not resume:
            check_run_directory(run_dir, resume=False, overwrite=overwrite)  # again: another run may have started
            for path in run_files(run_dir) if overwrite else ():  # the overwritten run's files, and only those
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    model = build_model(config.model, input_shape=data.input_shape, num_classes=len(data.classes),
                        rng=np.random.default_rng(init_seed), **config.model_options)
    check_precise_bn(config, model)  # before training, not after it
    summary = model.summary(data.input_shape) if root else None  # before any SyncBatchNorm conversion
    board = None
    if tensorboard and root:
        from normlab.train.tensorboard import TensorBoardLogger

        board = TensorBoardLogger(run_dir / TENSORBOARD_DIR)
        callbacks = [*callbacks, board.on_step]
    if comm is not None and config.framework != "numpy":
        raise ValueError(f"--distributed trains the NumPy models only; got framework {config.framework!r}")
    if comm is None and config.framework == "numpy":
        trainer_class, optimizer = Trainer, build_optimizer(config, model)
    elif comm is None:  # the same model, data and loop; the steps run in the model's torch or Keras twin
        from normlab.train.frameworks import FrameworkTrainer, KerasSteps, TorchSteps

        trainer_class = FrameworkTrainer
        optimizer = (TorchSteps(model, config) if config.framework == "torch"
                     else KerasSteps(model, config, data.input_shape))
    else:
        from normlab.distributed import broadcast_state, convert_sync_batchnorm
        from normlab.train.distributed_trainer import DistributedTrainer

        if sync_batchnorm and comm.size > 1:
            model = convert_sync_batchnorm(model, comm)
        broadcast_state(model, comm)  # the same seed built the same weights; this makes sure of it
        trainer_class = partial(DistributedTrainer, comm=comm, dropout_seed=config.seed)
        optimizer = build_optimizer(config, model)
    augment = Augment(padding=4 if data.input_shape[-1] >= 32 else 2) if config.augment else None
    trainer = trainer_class(model, optimizer, data.x_train, data.y_train, data.x_val, data.y_val, epochs=config.epochs,
                            batch_size=config.batch_size, rng=np.random.default_rng(train_seed),
                            augment=augment, run_dir=run_dir, callbacks=callbacks,
                            epoch_callbacks=[board.on_epoch] if board else [], progress=progress, log=log)
    log = trainer.log  # DistributedTrainer's: silent on the ranks other than 0
    trainer.schedule = build_schedule(config, trainer.steps_per_epoch)
    trainer.depends_on = depends_on
    if not resume and root:
        atomic_write_bytes(run_dir / CONFIG, config.to_json().encode())
        if comm is not None:
            atomic_write_json(run_dir / DISTRIBUTED, {"processes": comm.size, "sync_batchnorm": sync_batchnorm})
    if root:
        atomic_write_json(run_dir / PREPROCESSING, preprocessing_record(data))
    n_params = sum(p.data.size for p in model.parameters())
    if summary is not None:
        log(str(summary))
    processes = "" if comm is None or comm.size == 1 else (
        f" on {comm.size} processes ({'synchronized' if sync_batchnorm else 'local'} batch norm"
        + (f"; {comm.threads.describe()})" if getattr(comm, "threads", None) else ")"))
    log(f"{config.model} ({n_params:,} parameters) on {config.dataset}: {len(data.x_train)} training, "
        f"{len(data.x_val)} validation, {len(data.x_test)} test examples; {config.optimizer} lr {config.lr:g}, "
        f"batch {config.batch_size}, {plural(config.epochs, 'epoch')}, {config.framework}{processes} -> {run_dir}")
    try:
        fit = trainer.fit(resume=resume, max_steps=max_steps)
        test_acc = None
        if fit.status == "completed" and root:  # rank 0 alone holds the best weights' file
            trainer.load_best()
            if config.precise_bn:
                samples = precise_batchnorm(model, data.x_train, config)
                save_model(run_dir / BEST_MODEL, model, {**load_meta(run_dir / BEST_MODEL),
                                                         "precise_bn_samples": samples})
                k = config.precise_bn
                log(f"batch norm statistics recomputed from {k} training batch{'' if k == 1 else 'es'} of "
                    f"{config.batch_size} ({samples} examples; --precise-bn)")
            test_acc = trainer.accuracy(data.x_test, data.y_test, "test")
            fit.history.test_acc = test_acc
            save_history(run_dir, fit.history, trainer.steps_per_epoch)
            if board is not None:
                board.test_accuracy(test_acc, trainer.epochs_done)
    finally:
        if board is not None:
            board.close()
    if (fit.history.epochs or fit.history.loss) and root:
        save_figure(curves_figure(fit.history, curves_title(config, model)), run_dir / CURVES)
    return RunResult(**vars(fit), test_acc=test_acc, run_dir=run_dir)


def check_precise_bn(config: TrainConfig, model: Module) -> None:
    """`--precise-bn K` checked before training: the model has batch norm."""
    if config.precise_bn and not running_statistics_layers(model):
        raise ValueError(f"--precise-bn {config.precise_bn}: model {config.model!r} {config.model_options or ''} has "
                         f"no batch norm with running statistics to recompute")


def check_precise_bn_size(config: TrainConfig, n_train: int) -> None:
    """`--precise-bn K` checked before the run directory is made: the training split holds K batches."""
    k, b = config.precise_bn, config.batch_size
    if k * b > n_train:
        raise ValueError(f"--precise-bn {k}: {k} batches of {b} need {k * b} training examples, the training split "
                         f"has {n_train}")


def precise_batchnorm(model: Module, x_train: np.ndarray, config: TrainConfig) -> int:
    """Recompute the model's batch norm statistics (`nn.recompute_batchnorm_statistics`) from config.precise_bn
    batches of config.batch_size training examples (not augmented), drawn without replacement by a generator
    of config.seed's own. Returns the number of examples."""
    k, b = config.precise_bn, config.batch_size
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(4)[3])  # beside run_seeds' three
    chosen = rng.permutation(len(x_train))[:k * b]
    return recompute_batchnorm_statistics(model, (x_train[chosen[i * b:(i + 1) * b]] for i in range(k)))


def curves_title(config: TrainConfig, model: Module) -> str:
    """curves.png's title: what tells runs apart, e.g. 'fcnet, batch norm, on fashion-mnist: adam lr 0.001,
    numpy'."""
    normalization = getattr(model, "normalization", None)
    norm = "" if normalization is None else (", no normalization" if normalization == "none"
                                             else f", {normalization} norm")
    return (f"{config.model}{norm}, on {config.dataset}: {config.optimizer} lr {config.lr:g}, "
            f"{config.framework}")
