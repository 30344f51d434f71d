"""Recompute a model's batch norm statistics from each rank's own batches; rank 0 writes every rank's state
dict to a pickle file. Launched by tests/distributed/test_precise_bn_processes.py as

    mpiexec -n 2 python3 precise_bn_worker.py CASE_IN RESULTS_OUT

The case: {"model": a normlab Module, "batches": one list of arrays per rank (any number, any sizes),
"sync": whether to convert the model's batch norms to SyncBatchNorm first}.
"""

import pickle
import sys

from normlab.distributed import abort_on_error, convert_sync_batchnorm
from normlab.nn import recompute_batchnorm_statistics


def main(case_path: str, results_path: str) -> None:
    with abort_on_error() as comm:
        with open(case_path, "rb") as f:
            case = pickle.load(f)
        model = convert_sync_batchnorm(case["model"], comm) if case["sync"] else case["model"]
        samples = recompute_batchnorm_statistics(model, case["batches"][comm.rank], comm=comm)
        states = comm.allgather_object({"samples": samples, "state": model.state_dict()})
        if comm.is_root:
            with open(results_path, "wb") as f:
                pickle.dump({"size": comm.size, "ranks": states}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
