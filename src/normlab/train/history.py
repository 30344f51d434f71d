"""What a run records: the loss of every iteration and one row of metrics per epoch.

`save_history` writes it into a run directory three ways: history.json (everything, the test accuracy
included), history.csv (one row per epoch: the fields of `EpochRecord`, an empty val_acc without a
validation set) and iterations.csv (one row per iteration: iteration, epoch, step, loss, lr), so that
`pandas.read_csv` or a spreadsheet reads them as they are.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from normlab.files import atomic_write_bytes, atomic_write_json

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
ITERATIONS_CSV = "iterations.csv"


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float  # mean loss of the epoch's iterations
    train_acc: float  # accuracy in eval mode on a fixed subset of the training set
    val_acc: float | None  # None without a validation set
    lr: float  # learning rate of the epoch's last step
    seconds: float  # wall time of the epoch's training steps
    eval_seconds: float  # wall time of the evaluation after it


@dataclass
class History:
    loss: list[float] = field(default_factory=list)  # per iteration
    lr: list[float] = field(default_factory=list)  # per iteration
    epochs: list[EpochRecord] = field(default_factory=list)
    test_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(list(d["loss"]), list(d["lr"]), [EpochRecord(**e) for e in d["epochs"]], d.get("test_acc"))

    def best_epoch(self) -> EpochRecord | None:
        """The epoch with the highest validation accuracy (the first of equals), or None."""
        scored = [e for e in self.epochs if e.val_acc is not None]
        return max(scored, key=lambda e: e.val_acc) if scored else None


def _csv(header: list[str], rows) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else repr(v) if isinstance(v, float) else v for v in row] for row in rows)
    return text.getvalue().encode()


def save_history(run_dir: str | os.PathLike, history: History, steps_per_epoch: int) -> None:
    """Write history.json, history.csv and iterations.csv into run_dir (each atomically).

    steps_per_epoch numbers the iterations' epochs and steps: iteration i (1-based) is step
    (i - 1) % steps_per_epoch + 1 of epoch (i - 1) // steps_per_epoch + 1.
    """
    run_dir = Path(run_dir)
    atomic_write_json(run_dir / HISTORY_JSON, history.to_dict())
    columns = [f.name for f in fields(EpochRecord)]
    atomic_write_bytes(run_dir / HISTORY_CSV, _csv(columns, ([getattr(e, c) for c in columns] for e in history.epochs)))
    iterations = ([i + 1, i // steps_per_epoch + 1, i % steps_per_epoch + 1, loss, lr]
                  for i, (loss, lr) in enumerate(zip(history.loss, history.lr)))
    atomic_write_bytes(run_dir / ITERATIONS_CSV, _csv(["iteration", "epoch", "step", "loss", "lr"], iterations))
