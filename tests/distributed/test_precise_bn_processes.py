"""recompute_batchnorm_statistics over several processes: each brings its own batches (unequal numbers and
sizes, none at all on one), and every process ends with the statistics of all batches concatenated (float64
rounding), identical on every rank; with SyncBatchNorm layers too; an error on one rank is raised on every
rank instead of leaving the others waiting. Under mpiexec and, for the cheap cases, with thread ranks."""

import copy
import pickle

import numpy as np
import pytest

from normlab import nn
from normlab.distributed import convert_sync_batchnorm
from normlab.nn.normalization import _BatchNorm

RTOL = 1e-12


def model_and_batches(rng, counts_per_rank):
    """A float64 model of two batch norms over (N, C, H, W) then one over (N, D), and each rank's batches
    (batch sizes per rank as given; batch means far apart)."""
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64), nn.BatchNorm2d(3, dtype=np.float64), nn.ReLU(),
        nn.Conv2d(3, 2, 3, rng=rng, dtype=np.float64), nn.BatchNorm2d(2, momentum=None, dtype=np.float64),
        nn.Flatten(), nn.Linear(2 * 2 * 2, 4, rng=rng, dtype=np.float64), nn.BatchNorm1d(4, dtype=np.float64))
    batches = [[rng.standard_normal((n, 2, 4, 4)) * rng.uniform(0.5, 3) + rng.uniform(-5, 5) for n in counts]
               for counts in counts_per_rank]
    return model, batches


def concatenated_statistics(model, batches):
    """Per batch norm, the float64 mean and unbiased variance of its training-mode inputs over all batches."""
    model = copy.deepcopy(model).train()
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    inputs = {id(m): [] for m in layers}
    for x in batches:
        for layer in model.children():
            if isinstance(layer, _BatchNorm):
                inputs[id(layer)].append(x)
            x = layer.forward(x)
    stats = []
    for m in layers:
        everything = np.concatenate(inputs[id(m)])
        axes = (0, *range(2, everything.ndim))
        stats.append((everything.mean(axis=axes), everything.var(axis=axes, ddof=1)))
    return stats


def assert_every_rank_has(states, model, expected):
    names = [name for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
    for state in states:
        for name, (mean, var) in zip(names, expected, strict=True):
            np.testing.assert_allclose(state[f"{name}.running_mean"], mean, rtol=RTOL, atol=0)
            np.testing.assert_allclose(state[f"{name}.running_var"], var, rtol=RTOL, atol=0)
    for state in states[1:]:
        for key, value in state.items():
            np.testing.assert_array_equal(value, states[0][key], err_msg=key)  # bit for bit the same


@pytest.mark.parametrize(("counts_per_rank", "sync"), [
    ([[5, 2, 9], [3]], False),
    ([[], [4, 4], [2, 7, 2, 3]], True),
])
def test_thread_ranks_end_with_the_statistics_of_all_batches(run_threads, rng, counts_per_rank, sync):
    model, batches = model_and_batches(rng, counts_per_rank)
    expected = concatenated_statistics(model, [x for rank in batches for x in rank])

    def rank_work(comm):
        own = copy.deepcopy(model)
        own = convert_sync_batchnorm(own, comm) if sync else own
        samples = nn.recompute_batchnorm_statistics(own, batches[comm.rank], comm=comm)
        return samples, own.state_dict()

    results = run_threads(len(counts_per_rank), rank_work)
    assert [samples for samples, _ in results] == [sum(map(sum, counts_per_rank))] * len(counts_per_rank)
    assert_every_rank_has([state for _, state in results], model, expected)


def test_an_error_on_one_rank_is_raised_on_every_rank(run_threads, rng):
    model, batches = model_and_batches(rng, [[4], [4]])
    batches[1].append(np.ones((3, 5)))  # rank 1's second batch has the wrong sample shape

    def rank_work(comm):
        own = copy.deepcopy(model)
        try:
            nn.recompute_batchnorm_statistics(own, batches[comm.rank], comm=comm)
        except Exception as e:  # noqa: BLE001
            return type(e).__name__, str(e), own.state_dict()
        return None

    (kind0, message0, state0), (kind1, message1, _) = run_threads(2, rank_work)
    assert kind1 == "ValueError" and "samples of one shape" in message1
    assert kind0 == "RuntimeError" and "failed on process(es) [1]" in message0
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(state0[key], value, err_msg=key)  # left as it was


def test_no_batch_on_any_rank_is_refused_on_every_rank(run_threads):
    def rank_work(comm):
        with pytest.raises(ValueError, match="at least one batch on any of the 2 processes"):
            nn.recompute_batchnorm_statistics(nn.BatchNorm1d(3), [], comm=comm)

    run_threads(2, rank_work)


@pytest.mark.parametrize("sync", [False, True])
def test_two_mpi_ranks_with_unequal_batches_end_with_the_statistics_of_all_batches(run_mpi, tmp_path, rng, sync):
    counts_per_rank = [[6, 2, 9], [2, 11]]
    model, batches = model_and_batches(rng, counts_per_rank)
    expected = concatenated_statistics(model, [x for rank in batches for x in rank])
    with open(tmp_path / "case.pkl", "wb") as f:
        pickle.dump({"model": model, "batches": batches, "sync": sync}, f)
    run_mpi("precise_bn_worker.py", tmp_path / "case.pkl", tmp_path / "results.pkl")
    with open(tmp_path / "results.pkl", "rb") as f:
        results = pickle.load(f)
    assert results["size"] == 2
    assert [r["samples"] for r in results["ranks"]] == [30, 30]
    assert_every_rank_has([r["state"] for r in results["ranks"]], model, expected)
