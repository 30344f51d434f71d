"""Two ways to run code as several processes in the tests:

- `run_threads(size, fn)`: `size` threads in this process, each calling fn(comm) with a communicator
  over the group (fast; for properties checked over many cases);
- `run_mpi(script, *args)`: a script under tests/distributed/scripts launched by `mpiexec -n 2` in a
  subprocess with a timeout (the real thing).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from normlab.distributed.comm import Communicator

SCRIPTS = Path(__file__).parent / "scripts"
SRC = Path(__file__).resolve().parents[2] / "src"


class ThreadComm(Communicator):
    """Rank `rank` of a group of threads: every collective is an exchange through shared slots between two
    barrier waits, and reductions add up in rank order, so every thread gets the same bits (as with MPI)."""

    def __init__(self, rank: int, group: dict):
        self.rank, self.size, self._group = rank, group["size"], group

    def _exchange(self, value):
        slots, barrier = self._group["slots"], self._group["barrier"]
        slots[self.rank] = value
        barrier.wait()
        values = list(slots)
        barrier.wait()  # nobody overwrites a slot before everyone has read it
        return values

    def _allreduce_sum(self, buf):
        values = self._exchange(buf.copy())
        total = values[0].copy()
        for v in values[1:]:
            total += v
        buf[...] = total

    def _allgather(self, buf, out):
        out[...] = np.stack(self._exchange(buf.copy()))

    def _broadcast(self, buf, root):
        buf[...] = self._exchange(buf.copy())[root]

    def allgather_object(self, obj):
        return self._exchange(obj)

    def broadcast_object(self, obj, root=0):
        self._check_root(root)
        return self._exchange(obj)[root]

    def barrier(self):
        self._exchange(None)


def _run_threads(size: int, fn, timeout: float = 20.0) -> list:
    """fn(comm) on `size` threads; returns the results by rank, or raises the first rank's exception."""
    group = {"size": size, "slots": [None] * size, "barrier": threading.Barrier(size, timeout=timeout)}
    results, errors = [None] * size, [None] * size

    def work(rank):
        try:
            results[rank] = fn(ThreadComm(rank, group))
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread below
            errors[rank] = e
            group["barrier"].abort()  # release the others instead of letting them wait for the timeout

    threads = [threading.Thread(target=work, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    raised = [e for e in errors if e is not None]
    # A rank's own error first: the others' broken barriers are its consequence.
    raised.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))
    if raised:
        raise raised[0]
    return results


@pytest.fixture(scope="session")
def run_threads():
    return _run_threads


def _run_mpi(script: str, *args, n: int = 2, timeout: float = 30.0, launcher: bool = True, check: bool = True,
             module: bool = False, environment: dict[str, str | None] | None = None):
    """Run tests/distributed/scripts/`script` (or, with module=True, `python -m script`) with `args` under
    `mpiexec -n n` (or plain python when launcher=False), one thread per rank; returns the CompletedProcess
    (stdout and stderr as text). With check=True a non-zero exit fails the test, showing the output.
    environment: variables to set on top (a value of None removes the variable, e.g. a thread count)."""
    if launcher and shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not on PATH (install the extra: pip install 'normlab[mpi]')")
    pytest.importorskip("mpi4py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    command = [sys.executable, *(["-m", script] if module else [str(SCRIPTS / script)]), *map(str, args)]
    if launcher:
        command = ["mpiexec", "-n", str(n), *command]
    # A session of its own, so that on timeout the launcher and every rank it started are killed together.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish within {timeout} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    if check and process.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {process.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def run_mpi():
    return _run_mpi

