"""Data-parallel SGD on an MLP with batch norm; rank 0 writes the results (and a checkpoint). Launched by
tests/distributed/test_data_parallel.py as

    mpiexec -n 2 python3 data_parallel_worker.py JOB_IN RESULTS_OUT

JOB_IN (a pickle): {"dims": (D, H, K), "state": the initial state dict, "x": (N, D), "y": (N,),
"batches": index arrays of the global batches, "steps": (first, stop), "lr": float,
"resume_from": checkpoint to start from or None, "checkpoint_to": where rank 0 saves the final state or None}.
Every rank builds its model from a different seed: only rank 0 loads the starting state, and the others
must receive it from DataParallel's broadcast.
"""

import pickle
import sys

import numpy as np

from normlab import nn
from normlab.distributed import DataParallel, abort_on_error
from normlab.functional import softmax_cross_entropy


def build_mlp(d: int, h: int, k: int, rng: np.random.Generator) -> nn.Module:
    return nn.Sequential(nn.Linear(d, h, rng=rng, dtype=np.float64), nn.BatchNorm1d(h, dtype=np.float64), nn.ReLU(),
                         nn.Linear(h, k, rng=rng, dtype=np.float64))


def train(model: nn.Module, job: dict, comm) -> list[float]:
    """SGD steps of `job` on `model` (plain SGD written out here: p -= lr * grad); returns the losses."""
    dp = DataParallel(model, comm)
    losses = []
    for step in range(*job["steps"]):
        batch = job["batches"][step]
        x, y = dp.shard(job["x"][batch]), dp.shard(job["y"][batch])
        losses.append(dp.train_step(x, y, softmax_cross_entropy).loss)
        for p in dp.model.parameters():
            p.data -= job["lr"] * p.grad
    dp.check_synchronized()
    return losses


def main(job_path: str, results_path: str) -> None:
    with abort_on_error() as comm:
        with open(job_path, "rb") as f:
            job = pickle.load(f)
        model = build_mlp(*job["dims"], rng=np.random.default_rng(100 + comm.rank))
        if comm.is_root:
            start = job["resume_from"] or job["state"]
            model.load_state_dict(dict(np.load(start)) if isinstance(start, str) else start)
        losses = train(model, job, comm)
        states = comm.allgather_object(model.state_dict())
        if comm.is_root:
            if job["checkpoint_to"]:
                np.savez(job["checkpoint_to"], **model.state_dict())
            with open(results_path, "wb") as f:
                pickle.dump({"size": comm.size, "losses": losses, "states": states}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
