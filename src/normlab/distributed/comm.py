"""Communicators: which process am I, how many are we, and the few collective operations that data-parallel
training needs.

`world()` is the communicator of every process the MPI launcher started (`mpiexec -n 2 ...`), through
mpi4py. Run without a launcher, or with one process, it is `SingleProcess`: every collective is the
identity, mpi4py is not even imported, and the same training code runs unchanged.

Every collective must be called by every process, in the same order, with buffers of the same shape;
a process that stops calling them (because it raised) leaves the others waiting forever, so run
distributed code inside `abort_on_error`.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

# What MPI launchers put in the environment of the processes they start: MPICH's and Intel MPI's Hydra
# (and Slurm with PMI) set PMI_*, Open MPI sets OMPI_COMM_WORLD_*, PMIx-based launchers set PMIX_RANK.
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_LAUNCHER_VARIABLES = (*_LAUNCHER_SIZE_VARIABLES, "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")

INSTALL_HINT = 'pip install "normlab[mpi]"   (mpi4py and the MPICH wheel: pip install mpi4py mpich)'


class Communicator:
    """A group of `size` processes; this one is number `rank`. Subclasses implement the collectives."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """Replace `buf` (a contiguous float64 array) by its elementwise sum over all processes; return it.

        Every process gets the same bits: MPI's reduction algorithms compute each element once and send it,
        or combine pairs symmetrically (a + b == b + a in IEEE arithmetic).
        """
        _check_buffer("buf", buf, float64_only=True)
        self._allreduce_sum(buf)
        return buf

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        """Every process's `buf` (contiguous, numeric, the same shape and dtype on all), stacked by rank.

        Returns an array of shape (size, *buf.shape).
        """
        _check_buffer("buf", buf, written=False)
        out = np.empty((self.size, *buf.shape), dtype=buf.dtype)  # (size, *buf.shape)
        self._allgather(buf, out)
        return out

    def broadcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite `buf` (contiguous, numeric, the same shape and dtype on all) with root's; return it."""
        _check_buffer("buf", buf)
        self._check_root(root)
        self._broadcast(buf, root)
        return buf

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every process's picklable `obj`, as a list by rank (for small things: counts, metrics, shapes)."""
        return [obj]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Root's picklable `obj` on every process (the others pass anything, e.g. None)."""
        self._check_root(root)
        return obj

    def barrier(self) -> None:
        """Wait until every process has called barrier."""

    def abort(self, code: int = 1) -> None:
        """End every process with exit status `code`; does not return."""
        raise SystemExit(code)

    def _allreduce_sum(self, buf: np.ndarray) -> None:
        """One process: the sum over processes is buf itself."""

    def _allgather(self, buf: np.ndarray, out: np.ndarray) -> None:
        out[0] = buf

    def _broadcast(self, buf: np.ndarray, root: int) -> None:
        """One process: buf already is root's."""

    def _check_root(self, root: int) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in [0, {self.size}), got {root!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class SingleProcess(Communicator):
    """The communicator of a process that runs alone: rank 0 of 1, every collective the identity."""


class MPICommunicator(Communicator):
    """A communicator over an mpi4py `MPI.Comm` (COMM_WORLD by default)."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.threads = None  # the ThreadShare `world()` gave this process, if it did

    def _allreduce_sum(self, buf: np.ndarray) -> None:
        self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)

    def _allgather(self, buf: np.ndarray, out: np.ndarray) -> None:
        self.comm.Allgather(buf, out)

    def _broadcast(self, buf: np.ndarray, root: int) -> None:
        self.comm.Bcast(buf, root=root)

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self._check_root(root)
        return self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


_WORLD: Communicator | None = None


def world() -> Communicator:
    """The communicator of all processes of this run (created once, then the same object).

    - Not started by an MPI launcher: `SingleProcess`, without importing mpi4py.
    - Started by one with a single process: `SingleProcess` too.
    - Started by one with several: `MPICommunicator` over COMM_WORLD. Each process then takes its share of
      its node's cores for OpenBLAS and numba, unless their thread variables are set
      (`normlab.distributed.threads`; what it did is in the communicator's `threads`).

    Raises RuntimeError when the launcher started several processes but they cannot talk: mpi4py is not
    installed, or it was built for another MPI than the launcher's (each process would then believe it is
    alone, and all of them would train and write the same run directory).
    """
    global _WORLD
    if _WORLD is None:
        _WORLD = _connect()
    return _WORLD


def _connect() -> Communicator:
    if not any(v in os.environ for v in _LAUNCHER_VARIABLES):
        return SingleProcess()
    launched = max((int(os.environ[v]) for v in _LAUNCHER_SIZE_VARIABLES if v in os.environ), default=0)
    try:
        import mpi4py  # noqa: F401
    except ImportError as err:
        if launched > 1:
            raise RuntimeError(f"started by an MPI launcher as one of {launched} processes, but mpi4py is not "
                               f"installed, so they cannot communicate; install it: {INSTALL_HINT}") from err
        return SingleProcess()
    comm = MPICommunicator()
    if launched > 1 and comm.size == 1:
        raise RuntimeError(f"the MPI launcher started {launched} processes but MPI sees each as alone: the "
                           "mpiexec on PATH belongs to another MPI than the one mpi4py was built with "
                           "(mixing Open MPI and MPICH?); use the matching mpiexec")
    if comm.size == 1:
        return SingleProcess()
    from normlab.distributed.threads import local_ranks_from_mpi, share_node_cores
    from normlab.kernels.backend import set_compile_notice

    comm.threads = share_node_cores(*local_ranks_from_mpi(comm.comm))  # a collective: every rank connects at once
    if not comm.is_root:
        set_compile_notice(None)  # rank 0 says it for all
    return comm


@contextmanager
def abort_on_error(comm: Communicator | None = None) -> Iterator[Communicator]:
    """Run a block so that an exception on one process ends them all, with its traceback, instead of
    leaving the others blocked in their next collective operation.

        with abort_on_error() as comm:
            train(...)

    On a single process the exception simply propagates. With several, the failing process prints its
    traceback and calls MPI_Abort, which makes the launcher end every process; mpiexec exits non-zero.
    `sys.exit(0)` inside the block is not an error; any other exit status is.
    """
    comm = world() if comm is None else comm
    try:
        yield comm
    except SystemExit as stop:
        if stop.code not in (None, 0) and comm.size > 1:
            _abort(comm, f"exit status {stop.code}")
        raise
    except BaseException as error:
        if comm.size > 1:
            _abort(comm, type(error).__name__)
        raise


def _abort(comm: Communicator, why: str) -> None:
    # The traceback goes out in one write, and the launcher gets a moment to forward it: MPI_Abort makes it
    # kill every process, and text still in its pipes is lost (a loaded machine showed only the first line).
    sys.stdout.flush()
    sys.stderr.write(f"{traceback.format_exc()}normlab: rank {comm.rank} of {comm.size} failed ({why}); "
                     "aborting all ranks\n")
    sys.stderr.flush()
    time.sleep(0.5)
    comm.abort(1)


def _check_buffer(name: str, buf: object, float64_only: bool = False, written: bool = True) -> None:
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(buf).__name__}")
    if float64_only and buf.dtype != np.float64:
        raise TypeError(f"{name} must be float64 (sums are formed in double precision), got {buf.dtype}")
    if not np.issubdtype(buf.dtype, np.number):
        raise TypeError(f"{name} must have a numeric dtype, got {buf.dtype}")
    if not buf.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (MPI reads it as one block of memory)")
    if written and not buf.flags.writeable:
        raise ValueError(f"{name} must be writeable (the result is written into it)")
