"""nn.SyncBatchNorm: an nn module (normlab.distributed re-exports the same class), which needs no import of
normlab.distributed until it synchronizes, takes any object with the four collectives it uses as its
communicator, and on one process is BatchNorm bit for bit. Equality with BatchNorm on the global batch
over several processes: tests/distributed/test_sync_batchnorm.py (threads and mpiexec)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from normlab import nn
from normlab.distributed import run_in_threads

SRC = Path(__file__).resolve().parents[2] / "src"


def test_normlab_distributed_exports_the_same_objects():
    from normlab import distributed
    from normlab.nn import syncbatchnorm

    assert distributed.SyncBatchNorm is syncbatchnorm.SyncBatchNorm is nn.SyncBatchNorm
    assert distributed.convert_sync_batchnorm is nn.convert_sync_batchnorm
    assert distributed.sync_batchnorm_forward is syncbatchnorm.sync_batchnorm_forward


def test_importing_nn_and_building_a_syncbatchnorm_does_not_import_distributed():
    code = ("import sys, numpy as np; from normlab import nn; m = nn.SyncBatchNorm(3); m.eval(); "
            "m.forward(np.ones((2, 3), np.float32)); print(repr(m)); "
            "print(sorted(k for k in sys.modules if k.startswith('normlab.distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}).stdout.splitlines()
    assert out == ["SyncBatchNorm(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True, comm=world())",
                   "[]"]


def test_without_comm_it_trains_on_the_world_of_this_process_as_batchnorm_bit_for_bit(rng, numpy_backend):
    from normlab.distributed import SingleProcess, world

    x, dout = rng.standard_normal((6, 4, 3)), rng.standard_normal((6, 4, 3))
    ref, sync = nn.BatchNorm1d(4, momentum=None, dtype=np.float64), nn.SyncBatchNorm(4, momentum=None,
                                                                                       dtype=np.float64)
    for _ in range(2):
        np.testing.assert_array_equal(sync.forward(x), ref.forward(x))
        np.testing.assert_array_equal(sync.backward(dout), ref.backward(dout))
    assert isinstance(sync.comm, SingleProcess) and sync.comm is world()
    for name, value in ref.state_dict().items():
        np.testing.assert_array_equal(sync.state_dict()[name], value)
    np.testing.assert_array_equal(sync.weight.grad, ref.weight.grad)


class DuckComm:
    """Only what SyncBatchNorm uses of a communicator, passed on to a real one: not a Communicator."""

    def __init__(self, comm):
        self.rank, self.size, self._comm = comm.rank, comm.size, comm

    def allgather(self, buf):
        return self._comm.allgather(buf)

    def allreduce_sum(self, buf):
        return self._comm.allreduce_sum(buf)


def test_a_communicator_is_any_object_with_rank_size_allgather_and_allreduce_sum(rng):
    x, dout = rng.standard_normal((5, 3)) * 2 + 4, rng.standard_normal((5, 3))
    ref = nn.BatchNorm1d(3, dtype=np.float64)
    ref_out, ref_dx = ref.forward(x), ref.backward(dout)
    parts = [slice(0, 2), slice(2, 5)]

    def rank_fn(comm):
        bn = nn.SyncBatchNorm(3, dtype=np.float64, comm=DuckComm(comm))
        part = parts[comm.rank]
        return bn.forward(x[part]), bn.backward(dout[part]), bn.weight.grad, bn.running_var

    ranks = run_in_threads(2, rank_fn, timeout=20)
    np.testing.assert_allclose(np.concatenate([r[0] for r in ranks]), ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r[1] for r in ranks]), ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ranks[0][2] + ranks[1][2], ref.weight.grad, rtol=1e-10, atol=1e-12)
    for r in ranks:
        np.testing.assert_allclose(r[3], ref.running_var, rtol=1e-12)


def test_convert_under_torchs_name_shares_the_parameters(rng):
    model = nn.Sequential(nn.Linear(3, 4, rng=rng), nn.BatchNorm1d(4))
    weight = model[1].weight
    assert nn.SyncBatchNorm.convert_sync_batchnorm(model) is model
    assert type(model[1]) is nn.SyncBatchNorm and model[1].weight is weight
    assert repr(model[1]).endswith("comm=world())")  # looked up when it first trains, not when converted
