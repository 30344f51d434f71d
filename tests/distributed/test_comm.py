"""The communicator: a single process without a launcher, clear errors for broken launches and buffers,
and an exception on one rank ending every rank instead of hanging them."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from normlab.distributed import comm as comm_module
from normlab.distributed.comm import SingleProcess, abort_on_error


def test_without_a_launcher_world_is_a_single_process_and_mpi_is_not_loaded():
    code = ("import sys; from normlab.distributed import world; w = world(); "
            "print(type(w).__name__, w.rank, w.size, w is world(), 'mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI_", "PMIX"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == ["SingleProcess", "0", "1", "True", "False"], out.stderr


def test_several_launched_processes_without_mpi4py_is_an_error_naming_the_extra(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails
    with pytest.raises(RuntimeError, match=r"one of 2 processes, but mpi4py is not installed.*normlab\[mpi\]"):
        comm_module._connect()


def test_one_launched_process_without_mpi4py_is_a_single_process(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert isinstance(comm_module._connect(), SingleProcess)


def test_a_launcher_of_another_mpi_is_an_error(monkeypatch):
    pytest.importorskip("mpi4py")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setattr(comm_module, "MPICommunicator", SingleProcess)  # what MPI reports: alone
    with pytest.raises(RuntimeError, match="started 2 processes but MPI sees each as alone"):
        comm_module._connect()


def test_single_process_collectives_are_the_identity():
    comm = SingleProcess()
    buf = np.arange(4.0)
    assert comm.allreduce_sum(buf) is buf and buf.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(comm.allgather(np.arange(3)), [[0, 1, 2]])
    assert comm.broadcast(buf) is buf
    assert comm.allgather_object({"a": 1}) == [{"a": 1}]
    assert comm.broadcast_object("x") == "x"
    assert comm.is_root


def test_bad_buffers_are_errors_naming_what_was_expected():
    comm = SingleProcess()
    with pytest.raises(TypeError, match="buf must be float64 .* got float32"):
        comm.allreduce_sum(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="buf must be a numpy.ndarray, got list"):
        comm.allreduce_sum([0.0])
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce_sum(np.zeros((3, 4))[:, ::2])
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        comm.broadcast(frozen)
    comm.allgather(frozen)  # only read: allowed
    with pytest.raises(TypeError, match="numeric dtype, got <U1"):
        comm.allgather(np.array(["a"]))
    with pytest.raises(ValueError, match=r"root must be a rank in \[0, 1\), got 1"):
        comm.broadcast(np.zeros(3), root=1)


class RecordingAbort(SingleProcess):
    """Rank 1 of 2, whose abort is recorded instead of ending the test process."""

    rank, size = 1, 2

    def __init__(self):
        self.aborted = []

    def abort(self, code=1):
        self.aborted.append(code)


def test_abort_on_error_aborts_the_group_and_prints_the_traceback(capsys):
    comm = RecordingAbort()
    with pytest.raises(ValueError, match="boom"):
        with abort_on_error(comm):
            raise ValueError("boom")
    assert comm.aborted == [1]
    err = capsys.readouterr().err
    assert "ValueError: boom" in err and "rank 1 of 2 failed (ValueError); aborting all ranks" in err


@pytest.mark.parametrize("code, aborts", [(0, False), (None, False), (3, True)])
def test_abort_on_error_treats_a_successful_exit_as_no_error(code, aborts):
    comm = RecordingAbort()
    with pytest.raises(SystemExit):
        with abort_on_error(comm):
            sys.exit(code)
    assert comm.aborted == ([1] if aborts else [])


def test_abort_on_error_on_a_single_process_just_raises():
    with pytest.raises(KeyError):
        with abort_on_error(SingleProcess()) as comm:
            assert comm.size == 1
            raise KeyError("k")


@pytest.mark.parametrize("bad_rank", [0, 1])
def test_a_rank_that_raises_ends_every_rank_with_its_error_instead_of_hanging(run_mpi, bad_rank):
    start = time.monotonic()
    result = run_mpi("error_worker.py", bad_rank, timeout=30, check=False)
    assert time.monotonic() - start < 30
    assert result.returncode != 0
    assert f"ValueError: boom on rank {bad_rank}" in result.stderr
    assert "got past the all-reduce" not in result.stdout
