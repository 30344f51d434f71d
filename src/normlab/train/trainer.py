"""The training loop: epochs of shuffled minibatches, evaluation, checkpoints, resume.

One training step (`train_step`) is `normlab.distributed.data_parallel_step` (forward -> softmax
cross-entropy -> backward -> `after_backward()`, which adds the model's regularization gradient -> the
gradients summed over the processes, the identity on one) -> optimizer step; `DistributedTrainer` gives it
more than one process. `fit` runs epochs of such steps, evaluates in eval mode after each epoch, keeps the
weights with the best validation accuracy, and saves the full training state at the end of every epoch and
when interrupted.

Run directory (when `run_dir` is given):
- checkpoint.safetensors: the latest full training state: weights, buffers, optimizer state, the epoch's
  order of examples, and in its JSON metadata the position, the random generators' states and the history.
  `fit(resume=True)` continues from it and ends with bit-identical weights to an uninterrupted run.
- model.safetensors: the weights of the epoch with the best validation accuracy (the last epoch's when
  there is no validation set).
- history.json: the loss of every iteration and one row of metrics per epoch; the same in history.csv
  (per epoch) and iterations.csv (per iteration), see `normlab.train.history.save_history`.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from normlab.checks import check_positive_int
from normlab.data.loader import batch_indices, epoch_order, num_batches
from normlab.distributed import Communicator, SingleProcess, data_parallel_step, gradient_workspace_size, shard
from normlab.functional import softmax_cross_entropy
from normlab.nn import Module
from normlab.optim import Optimizer, Schedule
from normlab.optim.schedules import Constant, Cosine
from normlab.train.checkpoint import load_meta, load_model, load_tensors, save_model, save_tensors
from normlab.train.history import HISTORY_JSON, EpochRecord, History, save_history

CHECKPOINT = "checkpoint.safetensors"
BEST_MODEL = "model.safetensors"
HISTORY = HISTORY_JSON
CHECKPOINT_FORMAT = 1
# A checkpoint's position: whole numbers, saved from and restored into the Trainer's attributes of these names.
POSITION = ("epochs_done", "step_in_epoch", "iteration", "steps_per_epoch")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; raised before the step is applied."""


class NonFiniteWeightsError(NonFiniteLossError):
    """A parameter holds NaN or inf (a step with a finite loss can still overflow the weights); raised
    before such weights are saved, so the last good checkpoint stays the last good one."""


@dataclass(frozen=True)
class StepInfo:
    """Passed to callbacks after every step."""

    epoch: int  # 1-based
    step: int  # 1-based, within the epoch
    steps_per_epoch: int
    iteration: int  # 1-based, over the whole run
    loss: float
    lr: float


@dataclass
class FitResult:
    status: str  # "completed", "interrupted", "diverged" or "paused" (max_steps reached)
    message: str
    history: History
    epochs_done: int
    iteration: int

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "paused")


Callback = Callable[["Trainer", StepInfo], None]
EpochCallback = Callable[["Trainer", EpochRecord], None]
NAMED_SCHEDULES = ("cosine", "constant")


def named_schedule(name: str, total_steps: int) -> Schedule:
    """"cosine": decay to 0 over the run's total_steps, as `normlab train`; "constant": a constant rate."""
    return Cosine(total_steps) if name == "cosine" else Constant()


def _pair(name: str, data) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (x, y) of arrays, got {type(data).__name__}")
    x, y = data
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a pair (x, y) of numpy arrays, got ({type(x).__name__}, "
                        f"{type(y).__name__})")
    return x, y


class Trainer:
    """Trains `model` with `optimizer` on (x_train, y_train), validating on (x_val, y_val); the defaults are
    `normlab train`'s (5 epochs of batches of 128, cosine decay):

        history = Trainer(model, Adam(model.parameters())).fit((x, y), (x_val, y_val), epochs=5).history

    Inputs:
    - x_train: (N, ...) float inputs; y_train: (N,) int labels. x_val, y_val likewise (may be empty or
      None). The data may instead be given to `fit`.
    - epochs, batch_size: each epoch visits every training example once, in a random order, in
      batches of batch_size (the last one smaller).
    - rng: draws each epoch's order and the augmentation (a fresh unseeded generator if None); saved in
      checkpoints with the state of every module's own `rng` (Dropout), so a run is a function of its seeds.
    - schedule: learning-rate factor per iteration: a Schedule, None (constant) or a name: "cosine" (the
      default, `normlab train`'s: decay to 0 over the run) or "constant".
    - augment: called as augment(x_batch, rng) on each training batch, or None.
    - run_dir: where checkpoint.safetensors, model.safetensors and history.json go (None: nowhere).
    - callbacks: called as callback(trainer, StepInfo) after every step; raising KeyboardInterrupt there
      acts as Ctrl-C. epoch_callbacks: called as callback(trainer, EpochRecord) after each epoch's
      evaluation and checkpoint.
    - train_eval_size: the per-epoch training accuracy is measured on the first train_eval_size
      training examples (in eval mode), which is cheaper than all of them.
    """

    comm: Communicator = SingleProcess()  # the processes a step's gradients are summed over (DistributedTrainer's)

    def __init__(self, model: Module, optimizer: Optimizer, x_train: np.ndarray | None = None,
                 y_train: np.ndarray | None = None, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                 *, epochs: int = 5, batch_size: int = 128, rng: np.random.Generator | None = None,
                 schedule: Schedule | str | None = "cosine",
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 run_dir: str | Path | None = None, callbacks: Sequence[Callback] = (),
                 epoch_callbacks: Sequence[EpochCallback] = (), progress: bool = True,
                 log: Callable[[str], None] = print, train_eval_size: int = 10000, eval_batch_size: int = 1000):
        self.model, self.optimizer = model, optimizer
        self.rng = np.random.default_rng() if rng is None else rng
        if isinstance(schedule, str) and schedule not in NAMED_SCHEDULES:
            raise ValueError(f"schedule must be a Schedule, None or one of {NAMED_SCHEDULES}, got {schedule!r}")
        self.schedule = Constant() if schedule is None or isinstance(schedule, str) else schedule
        # A named schedule is built for the run's length when fit starts (assigning .schedule replaces it).
        self.schedule_name = schedule if isinstance(schedule, str) else None
        self.augment = augment
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_dir = self.run_dir  # where fit(resume=True) reads (DistributedTrainer's: on every rank)
        self.callbacks, self.progress, self.log = list(callbacks), progress, log
        self.epoch_callbacks = list(epoch_callbacks)
        self.train_eval_size, self.eval_batch_size = train_eval_size, eval_batch_size
        self.epochs, self.batch_size = check_positive_int("epochs", epochs), check_positive_int("batch_size", batch_size)
        self.x_train = self.y_train = None
        self.steps_per_epoch = 0
        if x_train is not None or y_train is not None:
            val = None if x_val is None and y_val is None else (x_val, y_val)
            self.set_data((x_train, y_train), val)
        # Position: epochs completed, steps taken in the current epoch, and that epoch's order.
        self.epochs_done, self.step_in_epoch, self.iteration = 0, 0, 0
        self.order: np.ndarray | None = None
        self.history = History()
        self.best_val_acc: float | None = None
        self._epoch_started: float | None = None
        self._stop_requested = False
        self._consistent = True  # False while a step or an epoch's end is half done
        self.depends_on: dict[str, Any] | None = None  # saved in checkpoints; `run_training` checks it on resume
        self._workspace = np.empty(gradient_workspace_size(model, 2)) if self.comm.size > 1 else None
        self._local_stop = False  # this process was asked to stop; the next step's all-reduce tells the others

    @property
    def schedule(self) -> Schedule:
        return self._schedule

    @schedule.setter
    def schedule(self, schedule: Schedule) -> None:
        self._schedule, self.schedule_name = schedule, None

    # -- one step -----------------------------------------------------------------------------------
    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimization step on a batch (in DistributedTrainer: a global batch, of which this process
        trains on its part, a collective operation). Returns the loss (data loss plus regularization), the
        same on every process. Raises NonFiniteLossError, before any parameter changes, if the loss is NaN
        or infinite."""
        x, y = shard(x, self.comm), shard(y, self.comm)  # (n_r, ...), (n_r,): all of it on one process
        step, (stop,) = data_parallel_step(self.model, x, y, softmax_cross_entropy, self.comm,
                                           before_allreduce=self.after_backward, extras=[float(self._local_stop)],
                                           workspace=self._workspace)
        loss = step.loss
        if hasattr(self.model, "regularization_loss"):
            loss += self.model.regularization_loss()  # the same weights, so the same penalty, on every process
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss}")
        if stop > 0:
            self._stop_requested = True  # on every process after this same step
        self.optimizer.set_lr_factor(self.schedule(self.iteration))
        self.optimizer.step()
        return loss

    def after_backward(self) -> None:
        """Called between the backward of this process's part of the batch and the sum of the gradients over
        the processes: adds the regularization's gradient, on rank 0 only (every process holds the same
        weights: P copies would count it P times)."""
        if hasattr(self.model, "regularization_loss") and self.comm.is_root:
            self.model.regularization_backward()

    # -- evaluation ---------------------------------------------------------------------------------
    def predict(self, x: np.ndarray, desc: str = "evaluating") -> np.ndarray:
        """Class predictions (N,) in eval mode, in batches of eval_batch_size, under a progress bar named
        desc; the model's mode is restored."""
        was_training = self.model.training
        self.model.eval()
        try:
            preds = [self.model.forward(x[idx]).argmax(axis=1) for idx in self.eval_batches(len(x), desc)]
        finally:
            self.model.train(was_training)
        return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)

    def eval_batches(self, n: int, desc: str):
        """The index arrays of range(n) in batches of eval_batch_size, under a progress bar named desc that
        disappears when done (shown when progress is on and stderr is a terminal)."""
        return self._bar(list(batch_indices(np.arange(n), self.eval_batch_size)), desc=desc)

    def _bar(self, batches=None, **options):
        """A tqdm progress bar over batches that disappears when done; disable=None: tqdm turns itself off when
        stderr is not a terminal (logs, CI)."""
        from tqdm import tqdm

        return tqdm(batches, unit="batch", leave=False, disable=None if self.progress else True, dynamic_ncols=True,
                    **options)

    def accuracy(self, x: np.ndarray, y: np.ndarray, desc: str = "evaluating") -> float:
        """Fraction of correct predictions in eval mode (progress shown as `predict` shows it)."""
        if len(x) == 0:
            raise ValueError("cannot measure accuracy on an empty set")
        return float(np.mean(self.predict(x, desc) == y))

    # -- the loop -----------------------------------------------------------------------------------
    def set_data(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Train on train = (x, y) and validate on val = (x, y) (None: no validation)."""
        x_train, y_train = _pair("train", train)
        x_val, y_val = _pair("val", val) if val is not None else (x_train[:0], y_train[:0])
        if len(x_train) != len(y_train) or len(x_val) != len(y_val):
            raise ValueError(f"inputs and labels must have the same length, got x_train {len(x_train)}, "
                             f"y_train {len(y_train)}, x_val {len(x_val)}, y_val {len(y_val)}")
        if len(x_train) == 0:
            raise ValueError("x_train is empty")
        if self.x_train is not None and self.iteration and len(x_train) != len(self.x_train):
            raise ValueError(f"this trainer has taken {self.iteration} steps on {len(self.x_train)} training "
                             f"examples; train has {len(x_train)}: start a new Trainer for other data")
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val
        self.steps_per_epoch = num_batches(len(x_train), self.batch_size)

    def fit(self, train: tuple[np.ndarray, np.ndarray] | None = None, val: tuple[np.ndarray, np.ndarray] | None = None,
            *, epochs: int | None = None, resume: bool = False, max_steps: int | None = None) -> FitResult:
        """Train until `epochs` epochs are done in all (or `max_steps` iterations have been taken in all,
        then save a checkpoint and return "paused"). Returns a FitResult: status, message, history.

        train, val: (x, y) pairs, as `Trainer(model, optimizer).fit((x, y), (x_val, y_val), epochs=5)`;
        None: the data given to the constructor. epochs: None keeps the constructor's.
        resume=True first restores run_dir/checkpoint.safetensors. Ctrl-C (SIGINT) finishes the current
        step, saves a checkpoint and returns "interrupted"; a second Ctrl-C aborts at once. A NaN or
        infinite loss returns "diverged" without saving, so the last good checkpoint stays in place.
        """
        if train is not None:
            self.set_data(train, val)
        elif val is not None:
            raise ValueError("val was given without train; pass both, as fit((x, y), (x_val, y_val))")
        if self.x_train is None:
            raise ValueError("no training data: pass train=(x, y) to fit, or x_train and y_train to Trainer")
        if epochs is not None:
            self.epochs = check_positive_int("epochs", epochs)
        if self.schedule_name is not None:
            self._schedule = named_schedule(self.schedule_name, self.epochs * self.steps_per_epoch)
        if resume:
            if self.checkpoint_dir is None:
                raise ValueError("resume=True needs a run_dir holding a checkpoint")
            self.load_checkpoint(self.checkpoint_dir / CHECKPOINT)
        restore_handler = self._install_sigint_handler()
        try:
            while self.epochs_done < self.epochs:
                if max_steps is not None and self.iteration >= max_steps:
                    return self._stop("paused", f"stopped after {self.iteration} iterations (max_steps)")
                self._run_epoch(max_steps)
                if self.step_in_epoch == self.steps_per_epoch:
                    self._end_epoch()
                if self._stop_requested:
                    raise KeyboardInterrupt
            return self._result("completed", f"trained {plural(self.epochs, 'epoch')} ({self.iteration} iterations)")
        except KeyboardInterrupt:
            return self._interrupted()
        except NonFiniteLossError as e:
            where = (f"epoch {self.epochs_done + 1}, step {self.step_in_epoch + 1}/{self.steps_per_epoch} "
                     f"(iteration {self.iteration + 1})")
            kept = self._last_checkpoint_note()
            return self._result("diverged", f"{e} at {where}; training stopped. {kept}")
        finally:
            restore_handler()

    def _run_epoch(self, max_steps: int | None) -> None:
        self.model.train()
        if self.order is None:
            self._consistent = False
            self.order = epoch_order(len(self.x_train), self.rng)
            self.step_in_epoch = 0
            self._consistent = True
        self._epoch_started = time.perf_counter()
        epoch = self.epochs_done + 1
        batches = list(batch_indices(self.order, self.batch_size))
        desc = f"epoch {epoch}/{self.epochs}"
        with self._bar(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=desc) as bar:
            for idx in batches[self.step_in_epoch:]:
                if max_steps is not None and self.iteration >= max_steps:
                    return
                x = self.x_train[idx]
                self._consistent = False
                if self.augment is not None:
                    x = self.augment(x, self.rng)
                loss = self.train_step(x, self.y_train[idx])
                self.step_in_epoch += 1
                self.iteration += 1
                self.history.loss.append(loss)
                self.history.lr.append(self.optimizer.lr)
                self._consistent = True
                bar.update(1)
                if self.step_in_epoch % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                info = StepInfo(epoch, self.step_in_epoch, self.steps_per_epoch, self.iteration, loss,
                                self.optimizer.lr)
                for callback in self.callbacks:
                    callback(self, info)
                if self._stop_requested:
                    raise KeyboardInterrupt

    def _end_epoch(self) -> None:
        seconds = time.perf_counter() - self._epoch_started if self._epoch_started else float("nan")
        self._consistent = False
        started = time.perf_counter()
        n_eval = min(self.train_eval_size, len(self.x_train))
        train_acc = self.accuracy(self.x_train[:n_eval], self.y_train[:n_eval], "train accuracy")
        val_acc = self.accuracy(self.x_val, self.y_val, "validation") if len(self.x_val) else None
        epoch_losses = self.history.loss[-self.steps_per_epoch:]
        record = EpochRecord(epoch=self.epochs_done + 1, train_loss=float(np.mean(epoch_losses)),
                             train_acc=train_acc, val_acc=val_acc, lr=self.optimizer.lr, seconds=seconds,
                             eval_seconds=time.perf_counter() - started)
        self.history.epochs.append(record)
        improved = val_acc is None or self.best_val_acc is None or val_acc > self.best_val_acc
        if improved:
            self.best_val_acc = val_acc
        self.epochs_done += 1
        self.order, self.step_in_epoch = None, 0
        if self.run_dir is not None:
            self.check_weights_finite()
            if improved:
                save_model(self.run_dir / BEST_MODEL, self.model, {"epoch": record.epoch, "val_acc": val_acc})
            self.save_checkpoint(self.run_dir / CHECKPOINT)
            save_history(self.run_dir, self.history, self.steps_per_epoch)
        self._consistent = True
        val = f"{val_acc:.4f}" if val_acc is not None else "-"
        self.log(f"epoch {record.epoch}/{self.epochs}  loss {record.train_loss:.4f}  train acc {train_acc:.4f}  "
                 f"val acc {val}  lr {record.lr:.2e}  {seconds:.1f}s" + ("  *" if improved and val_acc else ""))
        for callback in self.epoch_callbacks:
            callback(self, record)

    # -- stopping -----------------------------------------------------------------------------------
    def _install_sigint_handler(self) -> Callable[[], None]:
        """Make Ctrl-C request a stop at the next step boundary (so the saved state is a consistent one);
        a second Ctrl-C raises KeyboardInterrupt at once. Only the main thread can handle signals."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, lambda signum, frame: self._on_ctrl_c())
        return lambda: signal.signal(signal.SIGINT, previous)

    def _on_ctrl_c(self) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self.log("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort)")

    def _interrupted(self) -> FitResult:
        self._stop_requested = False
        if not self._consistent:
            return self._result("interrupted", "interrupted in the middle of a step; nothing saved. "
                                + self._last_checkpoint_note())
        return self._stop("interrupted", f"interrupted at epoch {self.epochs_done + 1}, step "
                          f"{self.step_in_epoch}/{self.steps_per_epoch} (iteration {self.iteration})")

    def _stop(self, status: str, message: str) -> FitResult:
        if self.run_dir is not None:
            try:
                self.check_weights_finite()
            except NonFiniteWeightsError as e:
                return self._result("diverged", f"{e}; nothing saved. {self._last_checkpoint_note()}")
            self.save_checkpoint(self.run_dir / CHECKPOINT)
            save_history(self.run_dir, self.history, self.steps_per_epoch)
            message += f"; checkpoint saved to {self.run_dir / CHECKPOINT}"
        return self._result(status, message)

    def _last_checkpoint_note(self) -> str:
        path = self.run_dir / CHECKPOINT if self.run_dir is not None else None
        if path is None or not path.is_file():
            return "No checkpoint had been saved."
        meta = load_meta(path)
        return (f"The last good checkpoint ({path}, after {plural(meta['epochs_done'], 'epoch')} and "
                f"{meta['iteration']} iterations) is left in place.")

    def _result(self, status: str, message: str) -> FitResult:
        return FitResult(status, message, self.history, self.epochs_done, self.iteration)

    # -- checkpoints --------------------------------------------------------------------------------
    def module_rngs(self) -> dict[str, np.random.Generator]:
        """Every module's own generator (Dropout's `rng`), by module name."""
        return {name: m.rng for name, m in self.model.named_modules()
                if isinstance(getattr(m, "rng", None), np.random.Generator)}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The full training state as (arrays, JSON-able meta)."""
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_arrays, opt_meta = self.optimizer.state_dict()
        arrays.update({f"optimizer.{k}": v for k, v in opt_arrays.items()})
        if self.order is not None:
            arrays["order"] = self.order
        meta = {
            "format": CHECKPOINT_FORMAT,
            **{key: getattr(self, key) for key in POSITION},
            "best_val_acc": self.best_val_acc,
            "rng": self.rng.bit_generator.state,
            "module_rngs": {name: g.bit_generator.state for name, g in self.module_rngs().items()},
            "optimizer": opt_meta,
            "history": self.history.to_dict(),
        }
        if self.depends_on is not None:
            meta["depends_on"] = self.depends_on
        return arrays, meta

    def check_weights_finite(self) -> None:
        """Raise NonFiniteWeightsError naming the first parameter or buffer that holds NaN or inf."""
        for name, value in self.model.state_dict().items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise NonFiniteWeightsError(f"{name} holds NaN or inf after iteration {self.iteration}")

    def save_checkpoint(self, path: str | Path) -> None:
        arrays, meta = self.state()
        save_tensors(path, arrays, meta)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a state saved by `save_checkpoint` into this trainer (built the same way)."""
        arrays, meta = load_tensors(path)
        self.restore(arrays, meta, path)

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: str | Path) -> None:
        """Restore a state as `state()` returns it (read from the checkpoint `path`, named in errors).
        Every position field is checked first (a damaged one could make the loop spin or take extra steps)."""
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a normlab training checkpoint (format {meta.get('format')!r})")
        self._check_position(arrays, meta, path)
        if meta["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(f"{path}: saved with {meta['steps_per_epoch']} steps per epoch, this trainer has "
                             f"{self.steps_per_epoch}: the data or the batch size differ")
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        self.optimizer.load_state_dict({k[10:]: v for k, v in arrays.items() if k.startswith("optimizer.")},
                                       meta["optimizer"])
        self.order = arrays.get("order")
        self.epochs_done, self.step_in_epoch = meta["epochs_done"], meta["step_in_epoch"]
        self.iteration, self.best_val_acc = meta["iteration"], meta["best_val_acc"]
        self.rng.bit_generator.state = meta["rng"]
        rngs = self.module_rngs()
        if set(rngs) != set(meta["module_rngs"]):
            raise ValueError(f"{path}: saved generators for modules {sorted(meta['module_rngs'])}, this model has "
                             f"{sorted(rngs)}")
        for name, state in meta["module_rngs"].items():
            rngs[name].bit_generator.state = state
        self.history = History.from_dict(meta["history"])

    def _check_position(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], path: str | Path) -> None:
        """The checkpoint's position must be one this trainer can reach: whole numbers in range, iteration =
        epochs_done * steps_per_epoch + step_in_epoch, and a mid-epoch position's order a permutation of
        the training examples."""
        kinds = dict.fromkeys(POSITION, int) | dict.fromkeys(("rng", "module_rngs", "optimizer", "history"), dict)
        for key, kind in kinds.items():
            if key not in meta:
                raise ValueError(f"{path}: damaged checkpoint: its metadata lacks {key!r}")
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                raise ValueError(  # noqa: TRY004 (a damaged file: the callers report ValueError)
                    f"{path}: damaged checkpoint: {key} must be a{'n' if kind is int else ''} "
                    f"{kind.__name__}, got {meta[key]!r}")
        done, step, iteration, per_epoch = (meta[k] for k in POSITION)
        if not 0 <= done <= self.epochs:
            raise ValueError(f"{path}: damaged checkpoint: epochs_done must be in [0, {self.epochs}], got {done}")
        if not 0 <= step <= per_epoch:
            raise ValueError(f"{path}: damaged checkpoint: step_in_epoch must be in [0, {per_epoch}], got {step}")
        if iteration != done * per_epoch + step:
            raise ValueError(f"{path}: damaged checkpoint: iteration {iteration} is not epochs_done {done} x "
                             f"{per_epoch} steps + step_in_epoch {step}")
        order = arrays.get("order")
        if step > 0 and order is None:
            raise ValueError(f"{path}: damaged checkpoint: step_in_epoch {step} needs the epoch's order, "
                             "which is missing")
        n = len(self.x_train)
        if order is not None and (order.shape != (n,) or order.dtype.kind not in "iu"
                                  or not np.array_equal(np.sort(order), np.arange(n))):
            raise ValueError(f"{path}: damaged checkpoint: order must be a permutation of the {n} training "
                             f"examples, got {order.dtype} of shape {order.shape}")
        best = meta.get("best_val_acc")
        if best is not None and (not isinstance(best, (int, float)) or not 0.0 <= best <= 1.0):
            raise ValueError(f"{path}: damaged checkpoint: best_val_acc must be None or in [0, 1], got {best!r}")

    def load_best(self) -> None:
        """Load run_dir/model.safetensors (the best epoch's weights) into the model."""
        load_model(self.run_dir / BEST_MODEL, self.model)


def plural(count: int, noun: str) -> str:
    """'1 epoch', '5 epochs': for messages."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
