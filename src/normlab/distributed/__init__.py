"""Data-parallel training over MPI, and batch norm synchronized over the global batch.

Install the extra (`pip install "normlab[mpi]"`: mpi4py and the MPICH wheel) and launch with
`mpiexec -n 2 ...`; without a launcher everything here runs as a single process. See docs/distributed.md.
"""

from normlab.distributed.comm import Communicator, MPICommunicator, SingleProcess, abort_on_error, world
from normlab.distributed.data_parallel import (
    DataParallel,
    StepResult,
    allreduce_gradients,
    broadcast_state,
    check_synchronized,
    data_parallel_step,
    global_count,
    gradient_workspace_size,
    loss_weight,
    shard,
    shard_slice,
)
from normlab.distributed.thread_ranks import ThreadCommunicator, run_in_threads
from normlab.functional.moments import merge_moments
from normlab.nn.syncbatchnorm import (
    SyncBatchNorm,
    convert_sync_batchnorm,
    sync_batchnorm_backward,
    sync_batchnorm_forward,
)

__all__ = ["Communicator", "DataParallel", "MPICommunicator", "SingleProcess", "StepResult", "SyncBatchNorm",
           "ThreadCommunicator", "abort_on_error", "allreduce_gradients", "broadcast_state", "check_synchronized",
           "convert_sync_batchnorm", "data_parallel_step", "global_count", "gradient_workspace_size", "loss_weight",
           "merge_moments", "run_in_threads", "shard", "shard_slice", "sync_batchnorm_backward",
           "sync_batchnorm_forward", "world"]
