"""Rank BAD raises while the other ranks wait in an all-reduce for it; abort_on_error must end them all.
Launched by tests/distributed/test_comm.py as `mpiexec -n 2 python3 error_worker.py BAD`."""

import sys

import numpy as np

from normlab.distributed import abort_on_error

with abort_on_error() as comm:
    if comm.rank == int(sys.argv[1]):
        raise ValueError(f"boom on rank {comm.rank}")
    comm.allreduce_sum(np.zeros(3))  # never completes: rank BAD is not coming
    print(f"rank {comm.rank} got past the all-reduce", flush=True)
