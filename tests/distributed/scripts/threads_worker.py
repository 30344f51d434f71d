"""Rank 0 prints the thread counts each rank ended up with, one JSON line per rank (gathered first: two
ranks printing at once could interleave their lines in mpiexec's output). Launched by
tests/distributed/test_threads.py as `mpiexec -n 2 python3 threads_worker.py`."""

import json
import os

from normlab.blas import blas_threads
from normlab.distributed import world
from normlab.kernels.backend import numba_available
from normlab.parallel import worker_count

comm = world()
numba = None
if numba_available():  # imports numba after world(), as `normlab train` does
    import numba
share = comm.threads if comm.size > 1 else None
row = {"rank": comm.rank, "size": comm.size, "blas": blas_threads(), "workers": worker_count(),
       "numba": numba.get_num_threads() if numba else None,
       "share": share.threads if share else None, "kept": list(share.kept) if share else None,
       "omp": os.environ.get("OMP_NUM_THREADS")}
if comm.size > 1:
    from mpi4py import MPI

    rows = MPI.COMM_WORLD.gather(row, root=0)
else:
    rows = [row]
for row in rows or []:
    print(json.dumps(row), flush=True)
