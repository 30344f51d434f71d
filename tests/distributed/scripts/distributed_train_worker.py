"""normlab.train.run_training on every rank of `mpiexec -n 2`, three ways, for
tests/distributed/test_distributed_train.py:

    mpiexec -n 2 python3 distributed_train_worker.py OUT_DIR

- OUT_DIR/whole: one uninterrupted run;
- OUT_DIR/resumed: the same run paused after 3 iterations (max_steps), then resumed from rank 0's checkpoint;
- OUT_DIR/stopped: a callback raises KeyboardInterrupt on rank 1 only, after iteration 2.
Every run ends with the model bitwise identical on the ranks (checked, or every rank raises); rank 0 writes
OUT_DIR/results.json: each run's status and number of iterations on every rank.
"""

import json
import sys
from pathlib import Path

from normlab.distributed import abort_on_error, check_synchronized
from normlab.train.config import TrainConfig
from normlab.train.run import run_training

CONFIG = TrainConfig(model_options={"hidden_dims": (16,)}, optimizer="adam", epochs=2, batch_size=100, limit=600,
                     val_size=100)


def interrupt_rank_1(trainer, info):
    if trainer.comm.rank == 1 and info.iteration == 2:
        raise KeyboardInterrupt


def main(out: str) -> None:
    out = Path(out)
    with abort_on_error() as comm:
        runs = {}

        def run(name, callbacks=(), **kwargs):
            trainers = []  # the last step's trainer, to check its model is the same on every rank
            result = run_training(CONFIG, out / name, data_dir="/usr/share/datasets/fashion-mnist", download=False,
                                  progress=False, log=lambda _: None, comm=comm,
                                  callbacks=[*callbacks, lambda trainer, info: trainers.append(trainer)], **kwargs)
            check_synchronized(trainers[-1].model, comm)  # raises on every rank otherwise
            return comm.allgather_object((result.status, len(result.history.loss)))

        runs["whole"] = run("whole")
        runs["paused"] = run("resumed", max_steps=3)
        runs["resumed"] = run("resumed", resume=True)
        runs["stopped"] = run("stopped", callbacks=[interrupt_rank_1])
        if comm.is_root:
            (out / "results.json").write_text(json.dumps({"size": comm.size, "runs": runs}))


if __name__ == "__main__":
    main(*sys.argv[1:])
