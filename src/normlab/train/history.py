"""What a run records: the loss of every iteration and one row of metrics per epoch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
        return {"loss": self.loss, "lr": self.lr, "epochs": [asdict(e) for e in self.epochs],
                "test_acc": self.test_acc}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(list(d["loss"]), list(d["lr"]), [EpochRecord(**e) for e in d["epochs"]], d.get("test_acc"))

    def best_epoch(self) -> EpochRecord | None:
        """The epoch with the highest validation accuracy (the first of equals), or None."""
        scored = [e for e in self.epochs if e.val_acc is not None]
        return max(scored, key=lambda e: e.val_acc) if scored else None
