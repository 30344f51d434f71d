"""The Trainer, data-parallel over MPI processes (`normlab train --distributed`, see docs/distributed.md).

Every process runs the same loop over the same global batches (same data, same seed, so the same order
and augmentation) and trains on its contiguous part of each. A step's gradients are those of the global
batch's mean loss on every process, so every process applies the same update and the weights stay
identical; with SyncBatchNorm the run equals a single-process run with the same global batches (up to
float32 rounding: the sums are formed in another order).

What differs from `Trainer`, and why:
- The step is `Trainer.train_step` with this trainer's processes (`normlab.distributed.data_parallel_step`):
  it shards the batch, weights the loss gradient by n_r / N before the backward, adds the regularization
  gradient on rank 0 only (`Trainer.after_backward`) and all-reduces the gradients with the loss and the
  stop flag riding along. The NaN check sees the global loss, so every process stops at the same step.
- Stopping: Ctrl-C or a callback's KeyboardInterrupt reaches the processes at different moments, so it is
  only recorded; the next step's all-reduce tells every process, and all stop after that same step. A
  second Ctrl-C aborts every process at once.
- Only rank 0 writes: the others get run_dir=None, no progress bar and a silent log.
- Resume: rank 0 reads the checkpoint and sends it to the others (no shared file system needed).
- Dropout: each process draws its own masks (generators seeded by seed and rank). The checkpoint holds
  rank 0's generators only; on resume the other ranks reseed theirs from (seed, rank, iteration), so a
  resumed run with dropout on several processes draws other masks than an uninterrupted one would have.
  Without dropout a resumed run continues exactly.

With one process (no mpiexec) every collective is the identity and this is `Trainer`, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from normlab.distributed import Communicator
from normlab.train.checkpoint import load_tensors
from normlab.train.trainer import Callback, FitResult, StepInfo, Trainer


class DistributedTrainer(Trainer):
    """`Trainer` on the processes of `comm`; every process constructs it with the same arguments (the
    whole data set, the same rng seed), except run_dir, progress and log, which only rank 0 uses.

    Inputs as `Trainer`, plus:
    - comm: the processes (`normlab.distributed.world()`); batch_size is the global batch.
    - dropout_seed: seeds the other ranks' Dropout generators (with their rank), so masks differ per rank.
    """

    def __init__(self, model, optimizer, x_train, y_train, x_val, y_val, *, comm: Communicator,
                 run_dir: str | Path | None = None, callbacks: Sequence[Callback] = (), progress: bool = True,
                 log: Callable[[str], None] = print, dropout_seed: int = 0, **kwargs):
        root = comm.is_root
        self.comm, self.dropout_seed = comm, dropout_seed
        if comm.size > 1:
            callbacks = [_deferring_stop(c) for c in callbacks]
        super().__init__(model, optimizer, x_train, y_train, x_val, y_val, run_dir=run_dir if root else None,
                         callbacks=callbacks, progress=progress and root, log=log if root else _silent, **kwargs)
        self.checkpoint_dir = Path(run_dir) if run_dir is not None else None  # every rank: where to resume from
        self._reseed_module_rngs()

    # -- stopping -----------------------------------------------------------------------------------
    def _on_ctrl_c(self) -> None:
        if self.comm.size == 1:
            return super()._on_ctrl_c()
        if self._local_stop:
            print(f"normlab: rank {self.comm.rank}: Ctrl-C again; aborting every rank", flush=True)
            self.comm.abort(130)
        self._local_stop = True
        self.log("\nCtrl-C: every rank stops after the next step and saves a checkpoint (Ctrl-C again to abort)")
        return None

    def _interrupted(self) -> FitResult:
        self._local_stop = False
        return super()._interrupted()

    # -- resume -------------------------------------------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> None:
        """Rank 0 reads the checkpoint and sends it to every process (`fit(resume=True)` is a collective
        operation: every process calls it with the same arguments); an error reading it is raised on all."""
        loaded: tuple[str, Any] = ("error", None)
        if self.comm.is_root:
            try:
                loaded = ("ok", load_tensors(path))
            except (OSError, ValueError) as e:
                loaded = ("error", e)
        status, payload = self.comm.broadcast_object(loaded)
        if status == "error":
            raise payload
        arrays, meta = payload
        self.restore(arrays, meta, path)
        self._reseed_module_rngs()

    def _reseed_module_rngs(self) -> None:
        """Ranks other than 0 draw Dropout masks from generators of their own, derived from (dropout_seed,
        rank, iteration) so that they differ from rank 0's and from those before a resume."""
        if self.comm.rank == 0:
            return
        rngs = self.module_rngs()
        seeds = np.random.SeedSequence([self.dropout_seed, self.comm.rank, self.iteration]).spawn(len(rngs))
        for (_, g), seed in zip(sorted(rngs.items()), seeds, strict=True):
            g.bit_generator.state = np.random.default_rng(seed).bit_generator.state


def _silent(message: str) -> None:
    """The log of the ranks other than 0."""


def _deferring_stop(callback: Callback) -> Callback:
    """`callback`, with a KeyboardInterrupt it raises turned into a stop request that every process
    honours after the next step (raised on one process only, it would leave the others waiting)."""

    def call(trainer: DistributedTrainer, info: StepInfo) -> None:
        try:
            callback(trainer, info)
        except KeyboardInterrupt:
            trainer._local_stop = True

    return call
