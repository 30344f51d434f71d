"""TensorBoard event files for a run (`normlab train --tensorboard`), written by tensorboardX.

Scalars, in run_dir/tensorboard/:
- iteration/loss, iteration/lr: every training step, at the iteration (1-based);
- epoch/train_loss, epoch/train_acc, epoch/val_acc, epoch/seconds: after every epoch, at the epoch;
- test/accuracy: once, at the last epoch, when the run completes.

View with `tensorboard --logdir runs/` (tensorboard is a separate install). A resumed run appends a new
event file beside the first one, opened at its first step with purge_step: the steps a killed run logged
after its last checkpoint, trained again, are dropped from the earlier files instead of shown twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from normlab.train.history import EpochRecord

TENSORBOARD_DIR = "tensorboard"


def import_tensorboardx():
    try:
        import tensorboardX
    except ImportError as error:
        raise ImportError('TensorBoard logging needs tensorboardX: pip install "normlab[tensorboard]"') from error
    return tensorboardX


class TensorBoardLogger:
    """A step callback and an epoch callback for `Trainer` that write scalars to log_dir; close() at the end.

        logger = TensorBoardLogger(run_dir / "tensorboard")
        Trainer(..., callbacks=[logger.on_step], epoch_callbacks=[logger.on_epoch])
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self.tensorboardx = import_tensorboardx()
        self._writer = None  # opened at the first event, so a run that stops before training leaves no file

    def _open(self, purge_step: int | None = None):
        if self._writer is None:
            # a suffix of its own: tensorboardX names files by the second, and a run resumed within the same
            # second would write over the first file
            self._writer = self.tensorboardx.SummaryWriter(logdir=str(self.log_dir), purge_step=purge_step,
                                                           filename_suffix=f".{time.time_ns()}")
        return self._writer

    @property
    def writer(self):
        return self._open()

    def on_step(self, trainer, info) -> None:
        # the first step this process takes: after a resume, the earlier files' events from it on are stale
        self._open(purge_step=info.iteration if info.iteration > 1 else None)
        self.writer.add_scalar("iteration/loss", info.loss, info.iteration)
        self.writer.add_scalar("iteration/lr", info.lr, info.iteration)

    def on_epoch(self, trainer, record: EpochRecord) -> None:
        for name in ("train_loss", "train_acc", "val_acc", "seconds"):
            value = getattr(record, name)
            if value is not None:
                self.writer.add_scalar(f"epoch/{name}", value, record.epoch)
        self.writer.flush()

    def test_accuracy(self, accuracy: float, epoch: int) -> None:
        self.writer.add_scalar("test/accuracy", accuracy, epoch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
