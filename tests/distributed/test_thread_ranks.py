"""Thread ranks: the collectives over shared memory, and data-parallel SyncBatchNorm on them equal to batch
norm on the global batch."""

import threading
import time

import numpy as np
import pytest

from normlab.distributed import DataParallel, run_in_threads
from normlab.functional import softmax_cross_entropy
from normlab.models import FullyConnectedNet


def test_collectives_on_thread_ranks():
    def work(comm):
        buf = np.full(3, float(comm.rank + 1))
        comm.allreduce_sum(buf)
        gathered = comm.allgather(np.array([comm.rank], dtype=np.int64))
        root = comm.broadcast(np.array([10.0 * comm.rank]), root=2)
        return buf.tolist(), gathered.ravel().tolist(), root.tolist(), comm.allgather_object(f"r{comm.rank}")

    for buf, gathered, root, objects in run_in_threads(3, work):
        assert buf == [6.0, 6.0, 6.0] and gathered == [0, 1, 2] and root == [20.0]
        assert objects == ["r0", "r1", "r2"]


def test_an_error_on_one_rank_releases_the_others_and_is_raised():
    released = {}

    def work(comm):
        if comm.rank == 1:
            raise ValueError("rank 1 broke")
        try:
            comm.allreduce_sum(np.zeros(1))  # would wait for rank 1 until the timeout
        except threading.BrokenBarrierError as error:
            released[comm.rank] = (error, time.perf_counter())
            raise
        return comm.rank

    started = time.perf_counter()
    with pytest.raises(ValueError, match="rank 1 broke"):
        run_in_threads(3, work, timeout=60)  # the timeout: without the abort this fails after 60 s, not hangs
    # Each other rank was released by rank 1's abort, long before its wait would have timed out.
    assert sorted(released) == [0, 2]
    assert all(at - started < 30 for _, at in released.values())
    with pytest.raises(ValueError, match="size must be a positive integer, got 0"):
        run_in_threads(0, lambda comm: None)


def test_sync_batchnorm_on_thread_ranks_is_batch_norm_on_the_global_batch(rng):
    x = rng.standard_normal((8, 5))
    y = rng.integers(0, 3, 8)

    def model():
        return FullyConnectedNet(5, (6,), 3, normalization="batch", rng=np.random.default_rng(1), dtype=np.float64)

    single = model()
    out = single.forward(x)
    _, dout = softmax_cross_entropy(out, y)
    single.backward(dout)

    def work(comm):
        dp = DataParallel(model(), comm, sync_batchnorm=True)
        dp.train_step(dp.shard(x), dp.shard(y), softmax_cross_entropy)
        return {name: p.grad.copy() for name, p in dp.model.named_parameters()}

    for grads in run_in_threads(2, work):
        for name, p in single.named_parameters():
            np.testing.assert_allclose(grads[name], p.grad, rtol=1e-10, atol=1e-12)
