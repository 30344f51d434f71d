"""Under MPI each rank takes its share of the node's cores for OpenBLAS, numba and normlab.parallel, unless
the user set the thread variables (normlab.distributed.threads)."""

import json
import sys

import pytest

from normlab.blas import blas_threads, set_blas_threads
from normlab.distributed.threads import available_cores, node_share, share_node_cores

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


@pytest.mark.parametrize(("cores", "ranks", "expected"), [
    (2, 2, [1, 1]), (8, 3, [3, 3, 2]), (16, 4, [4, 4, 4, 4]), (2, 4, [1, 1, 1, 1]), (1, 1, [1]), (5, 1, [5]),
])
def test_node_share_splits_the_cores_evenly_with_the_remainder_to_the_first_ranks(cores, ranks, expected):
    shares = [node_share(cores, ranks, rank) for rank in range(ranks)]
    assert shares == expected
    assert sum(shares) == max(cores, ranks)  # every core used, never fewer than one thread per rank


def test_node_share_names_a_rank_outside_the_node():
    with pytest.raises(ValueError, match="local_rank must be in \\[0, local_ranks\\), got local_rank 2, "
                                         "local_ranks 2"):
        node_share(4, 2, 2)


@pytest.fixture
def restored_threads():
    """Put OpenBLAS's and numba's thread counts back after a test that changes them."""
    blas = blas_threads()
    numba = sys.modules.get("numba")
    numba_threads = numba.get_num_threads() if numba else None
    yield
    if blas is not None:
        set_blas_threads(blas)
    if numba is not None:
        numba.set_num_threads(numba_threads)


def test_share_sets_blas_and_numba_and_the_variables_of_later_libraries(restored_threads):
    if blas_threads() is None:
        pytest.skip("NumPy does not use OpenBLAS here")
    environ = {}
    share = share_node_cores(2, 1, cores=5, environ=environ)  # rank 1 of 2 on 5 cores: 2 threads
    assert share.threads == 2 and share.blas == 2 == blas_threads() and share.kept == ()
    assert environ["OMP_NUM_THREADS"] == environ["MKL_NUM_THREADS"] == "2"
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        assert share.numba == min(2, numba.config.NUMBA_NUM_THREADS) == numba.get_num_threads()
    else:
        assert environ["NUMBA_NUM_THREADS"] == "2"  # read when numba is imported
    assert share.describe() == "2 threads each: 2 processes on this node's 5 cores"


def test_share_leaves_the_users_own_settings_alone(restored_threads):
    before = blas_threads()
    environ = {"OMP_NUM_THREADS": "3", "NUMBA_NUM_THREADS": "3"}
    share = share_node_cores(2, 0, cores=2, environ=environ)
    assert share.threads == 1 and share.kept == ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")
    assert blas_threads() == before  # OpenBLAS honours OMP_NUM_THREADS: the user's choice
    assert environ == {"OMP_NUM_THREADS": "3", "NUMBA_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}
    assert share.describe().endswith("cores, OMP_NUM_THREADS, NUMBA_NUM_THREADS kept as set")


def _ranks(result) -> list[dict]:
    return sorted((json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")),
                  key=lambda r: r["rank"])


def test_two_ranks_started_without_thread_variables_each_take_their_share(run_mpi):
    ranks = _ranks(run_mpi("threads_worker.py", environment=dict.fromkeys(THREAD_VARIABLES), timeout=180))
    cores = available_cores()
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        expected = node_share(cores, 2, r["rank"])  # one rank per core on this 2-core machine
        assert r["share"] == expected and r["kept"] == []
        if r["blas"] is not None:
            assert r["blas"] == expected == r["workers"]  # normlab.parallel follows OpenBLAS
        if r["numba"] is not None:
            assert r["numba"] == expected
        assert r["omp"] == str(expected)


def test_two_ranks_keep_the_thread_counts_the_user_set(run_mpi):
    environment = {**dict.fromkeys(THREAD_VARIABLES), "OPENBLAS_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    for r in _ranks(run_mpi("threads_worker.py", environment=environment, timeout=180)):
        assert r["kept"] == ["OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"]
        if r["blas"] is not None:
            assert r["blas"] == 2
        if r["numba"] is not None:
            assert r["numba"] == 2
