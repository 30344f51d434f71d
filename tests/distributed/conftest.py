"""Two ways to run code as several processes in the tests:

- `run_threads(size, fn)`: `size` threads in this process (`normlab.distributed.run_in_threads`), each
  calling fn(comm) with a communicator over the group (fast; for properties checked over many cases);
- `run_mpi(script, *args)`: a script under tests/distributed/scripts launched by `mpiexec -n 2` in a
  subprocess with a timeout (the real thing).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from normlab.distributed.thread_ranks import run_in_threads

SCRIPTS = Path(__file__).parent / "scripts"
SRC = Path(__file__).resolve().parents[2] / "src"


def _run_threads(size: int, fn, timeout: float = 20.0) -> list:
    """fn(comm) on `size` threads (`normlab.distributed.run_in_threads`); returns the results by rank, or
    raises the first rank's exception. A collective that waits longer than `timeout` raises."""
    return run_in_threads(size, fn, timeout=timeout)


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

