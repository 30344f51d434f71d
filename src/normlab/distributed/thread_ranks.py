"""Several ranks in one process, one thread each: the collectives of `Communicator` over shared memory.

    results = run_in_threads(2, lambda comm: train_data_parallel(comm, ...))   # [rank 0's, rank 1's]

It runs data-parallel code (DataParallel, SyncBatchNorm) exactly as under `mpiexec -n P`, without an MPI
launcher: an experiment's sweep can then treat a P-rank training run as one task of a process pool.
Sums are formed in rank order, so every rank gets the same bits, run after run. The ranks share the GIL,
so this is for correctness and for small models, not for speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from normlab.checks import check_positive_int
from normlab.distributed.comm import Communicator

T = TypeVar("T")


class ThreadCommunicator(Communicator):
    """Rank `rank` of a group of threads (see the module docstring), which share a slot per rank and a barrier;
    made by `run_in_threads`."""

    def __init__(self, slots: list[Any], barrier: threading.Barrier, rank: int):
        self._slots, self._barrier, self.rank, self.size = slots, barrier, rank, len(slots)

    def _exchange(self, item: Any) -> list[Any]:
        """Every rank's item, by rank. Two barriers: all have written before anyone reads, and all have
        read before anyone writes the next exchange's item."""
        self._slots[self.rank] = item
        self._barrier.wait()
        items = list(self._slots)
        self._barrier.wait()
        return items

    def _allreduce_sum(self, buf: np.ndarray) -> None:
        parts = self._exchange(buf.copy())
        total = parts[0].copy()
        for part in parts[1:]:  # in rank order on every rank: the same bits everywhere
            total += part
        buf[...] = total

    def _allgather(self, buf: np.ndarray, out: np.ndarray) -> None:
        out[...] = np.stack(self._exchange(buf.copy()))

    def _broadcast(self, buf: np.ndarray, root: int) -> None:
        buf[...] = self._exchange(buf.copy())[root]

    def allgather_object(self, obj: Any) -> list[Any]:
        return self._exchange(obj)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self._check_root(root)
        return self._exchange(obj)[root]

    def barrier(self) -> None:
        self._barrier.wait()

    def abort(self, code: int = 1) -> None:
        self._barrier.abort()  # the other ranks' waits raise BrokenBarrierError


def run_in_threads(size: int, function: Callable[[Communicator], T], timeout: float | None = None) -> list[T]:
    """function(comm) on `size` ranks, one thread each; returns their results by rank. If a rank raises,
    the others are released (their collectives raise) and the first rank's error is raised here.
    timeout: seconds a collective may wait for the other ranks before it raises BrokenBarrierError (None:
    forever; tests pass one so that a rank that stops calling collectives fails instead of hanging)."""
    check_positive_int("size", size)
    slots, barrier = [None] * size, threading.Barrier(size, timeout=timeout)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def work(rank: int) -> None:
        comm = ThreadCommunicator(slots, barrier, rank)
        try:
            results[rank] = function(comm)
        except BaseException as error:  # noqa: BLE001  (re-raised by run_in_threads)
            errors[rank] = error
            comm.abort()

    threads = [threading.Thread(target=work, args=(rank,), name=f"rank-{rank}") for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                 next((e for e in errors if e is not None), None))
    if first is not None:
        raise first
    return results
