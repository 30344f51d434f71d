"""Run SyncBatchNorm on every process's part of the cases in a pickle file; rank 0 writes what every rank
computed to another pickle file. Launched by tests/distributed/test_sync_batchnorm.py as

    mpiexec -n 2 python3 sync_batchnorm_worker.py CASES_IN RESULTS_OUT

A case: {"x": (steps, N, C, *), "dout": like x, "gamma", "beta": (C,), "momentum", "counts": one local
batch size per rank}. Per step a rank records its output and dx; per case its weight and bias gradients
of each step, its running statistics at the end, and its output in evaluation mode afterwards.

Under mpiexec the layer is `normlab.nn.SyncBatchNorm` built without a communicator: it finds the world of
MPI processes on its own.
"""

import pickle
import sys

import numpy as np

from normlab.distributed import abort_on_error
from normlab.nn import SyncBatchNorm


def run_case(case: dict, comm, pass_comm: bool = True) -> dict:
    """This rank's part of `case`; the layer gets `comm`, or with pass_comm=False finds it (world())."""
    steps, n, c = case["x"].shape[:3]
    offsets = np.cumsum([0, *case["counts"]])
    if offsets[-1] != n or len(case["counts"]) != comm.size:
        raise ValueError(f"counts {case['counts']} must split {n} samples over {comm.size} ranks")
    part = slice(offsets[comm.rank], offsets[comm.rank + 1])
    bn = SyncBatchNorm(c, momentum=case["momentum"], dtype=np.float64, comm=comm if pass_comm else None)
    bn.weight.data[...], bn.bias.data[...] = case["gamma"], case["beta"]
    record = {"out": [], "dx": [], "dgamma": [], "dbeta": []}
    for step in range(steps):
        bn.zero_grad()
        record["out"].append(bn.forward(case["x"][step][part]))
        record["dx"].append(bn.backward(case["dout"][step][part]))
        record["dgamma"].append(bn.weight.grad.copy())
        record["dbeta"].append(bn.bias.grad.copy())
    record["state"] = bn.state_dict()
    bn.eval()
    record["eval_out"] = bn.forward(case["x"][-1][part])
    return record


def main(cases_path: str, results_path: str) -> None:
    with abort_on_error() as comm:
        with open(cases_path, "rb") as f:
            cases = pickle.load(f)
        records = [comm.allgather_object(run_case(case, comm, pass_comm=False)) for case in cases]  # [case][rank]
        if comm.is_root:
            with open(results_path, "wb") as f:
                pickle.dump({"size": comm.size, "records": records}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
