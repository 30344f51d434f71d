"""Threads for a process started by an MPI launcher: its share of the node's cores.

Why (measured in docs/distributed.md, "Threads"): NumPy's OpenBLAS, numba and `normlab.parallel` each start
as many threads as the process may use cores, so ranks sharing a node would wait for each other's descheduled
threads. Each rank takes its share: the cores it may run on (its affinity mask), divided among the ranks on its
node, the first ranks taking the remainder (3 ranks on 8 cores: 3, 3, 2).

What is set, unless the user set it (their variables win, per library):
- OpenBLAS (NumPy's matrix products, and with them `normlab.parallel`'s worker threads, which follow
  OpenBLAS's count): at run time through `normlab.blas`, because OpenBLAS read OPENBLAS_NUM_THREADS when
  NumPy was imported, before this runs. Left alone when OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or
  OMP_NUM_THREADS is set (OpenBLAS reads all three).
- numba: NUMBA_NUM_THREADS when numba is not imported yet (normlab imports it on first use), else
  `numba.set_num_threads` in this thread. Left alone when NUMBA_NUM_THREADS is set.
- OMP_NUM_THREADS and MKL_NUM_THREADS in the environment, when unset, for libraries loaded later (torch,
  MKL) and for child processes.

`normlab.distributed.world()` calls it once, when it connects to several processes; the ranks on this
node are those that share memory with this one (`Split_type(COMM_TYPE_SHARED)`), which works under every
launcher, across nodes too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

from normlab.blas import blas_threads, set_blas_threads

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
NUMBA_VARIABLE = "NUMBA_NUM_THREADS"
LATER_LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadShare:
    """What `share_node_cores` found and did."""

    cores: int  # cores this process may run on (its affinity mask)
    local_ranks: int  # processes of this run on this node
    local_rank: int  # this one's index among them
    threads: int  # its share of the cores
    blas: int | None  # OpenBLAS's threads now (None: NumPy does not use OpenBLAS)
    numba: int | None  # numba's threads, when numba is imported (else NUMBA_NUM_THREADS is set for later)
    kept: tuple[str, ...]  # the user's thread variables, left as they were

    def describe(self) -> str:
        """For a log, e.g. "1 thread each: 2 processes on this node's 2 cores"."""
        text = (f"{self.threads} thread{'s' if self.threads != 1 else ''} each: {self.local_ranks} processes on "
                f"this node's {self.cores} cores")
        return text + (f", {', '.join(self.kept)} kept as set" if self.kept else "")


def node_share(cores: int, local_ranks: int, local_rank: int) -> int:
    """Threads for rank `local_rank` of `local_ranks` on `cores` cores: an even share, the first
    `cores % local_ranks` ranks one more, at least one."""
    if local_ranks < 1 or not 0 <= local_rank < local_ranks:
        raise ValueError(f"local_rank must be in [0, local_ranks), got local_rank {local_rank}, "
                         f"local_ranks {local_ranks}")
    return max(1, cores // local_ranks + (local_rank < cores % local_ranks))


def local_ranks_from_mpi(mpi_comm) -> tuple[int, int]:
    """(ranks on this node, this rank's index among them) from an mpi4py communicator: its processes that
    share memory with this one. A collective: every rank of `mpi_comm` must call it."""
    from mpi4py import MPI

    node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size(), node.Get_rank()
    finally:
        node.Free()


def available_cores() -> int:
    """Cores this process may run on: its affinity mask where the system has one, else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def share_node_cores(local_ranks: int, local_rank: int, *, cores: int | None = None,
                     environ: MutableMapping[str, str] = os.environ) -> ThreadShare:
    """Give this process its share of the node's cores: OpenBLAS, numba (and `normlab.parallel`, which
    follows OpenBLAS) on `node_share(cores, local_ranks, local_rank)` threads, except where `environ` holds
    the user's own setting for that library. Returns what it did."""
    cores = available_cores() if cores is None else cores
    threads = node_share(cores, local_ranks, local_rank)
    kept = tuple(name for name in (*BLAS_VARIABLES, NUMBA_VARIABLE) if name in environ)
    blas = blas_threads()
    if not any(name in environ for name in BLAS_VARIABLES):
        blas = set_blas_threads(threads)
    numba = sys.modules.get("numba")
    if NUMBA_VARIABLE not in environ:
        if numba is None:
            environ[NUMBA_VARIABLE] = str(threads)  # read when normlab first imports numba
        else:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    for name in LATER_LIBRARY_VARIABLES:
        environ.setdefault(name, str(threads))
    return ThreadShare(cores, local_ranks, local_rank, threads, blas, numba and numba.get_num_threads(), kept)
