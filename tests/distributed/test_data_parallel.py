"""Data-parallel training: k steps on 2 ranks equal k steps on one process on the concatenated batches
(unequal local batches included), resume from rank 0's checkpoint, a single process without mpiexec, and
the pieces (sharding, gradient all-reduce, state broadcast, synchronization check)."""

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normlab import nn
from normlab.distributed import (
    DataParallel,
    SingleProcess,
    SyncBatchNorm,
    allreduce_gradients,
    broadcast_state,
    check_synchronized,
    global_count,
    loss_weight,
    shard_slice,
)
from normlab.functional import softmax_cross_entropy

_spec = importlib.util.spec_from_file_location("data_parallel_worker",
                                               Path(__file__).parent / "scripts" / "data_parallel_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

DIMS = (5, 6, 3)  # inputs, hidden units, classes
BATCH_SIZES = (8, 7, 8, 7)  # 4 + 4 and 4 + 3 on two ranks


def make_job(rng, tmp_path, **changes):
    n = sum(BATCH_SIZES)
    order = rng.permutation(n)
    job = {
        "dims": DIMS, "state": worker.build_mlp(*DIMS, rng=rng).state_dict(),
        "x": rng.standard_normal((n, DIMS[0])) * 2 + 1, "y": rng.integers(0, DIMS[2], n),
        "batches": np.split(order, np.cumsum(BATCH_SIZES)[:-1]), "steps": (0, len(BATCH_SIZES)), "lr": 0.5,
        "resume_from": None, "checkpoint_to": None,
    }
    job.update(changes)
    with open(tmp_path / "job.pkl", "wb") as f:
        pickle.dump(job, f)
    return job


def single_process_training(job, steps):
    """The reference: plain BatchNorm, whole batches, one process."""
    model = worker.build_mlp(*DIMS, rng=np.random.default_rng(0))
    model.load_state_dict(job["state"])
    losses = []
    for step in range(steps):
        batch = job["batches"][step]
        model.zero_grad()
        loss, dlogits = softmax_cross_entropy(model.forward(job["x"][batch]), job["y"][batch])
        model.backward(dlogits)
        for p in model.parameters():
            p.data -= job["lr"] * p.grad
        losses.append(loss)
    return losses, model.state_dict()


def read_results(tmp_path):
    with open(tmp_path / "results.pkl", "rb") as f:
        return pickle.load(f)


def assert_same_training(results, reference, size):
    ref_losses, ref_state = reference
    assert results["size"] == size
    np.testing.assert_allclose(results["losses"], ref_losses, rtol=1e-6, atol=1e-9)
    for rank, state in enumerate(results["states"]):
        assert list(state) == list(ref_state)
        for name, value in ref_state.items():
            np.testing.assert_allclose(state[name], value, rtol=1e-6, atol=1e-9, err_msg=f"{name} on rank {rank}")
            np.testing.assert_array_equal(state[name], results["states"][0][name])  # identical on every rank


def test_k_steps_on_two_ranks_equal_k_single_process_steps_on_the_concatenated_batches(run_mpi, tmp_path, rng):
    job = make_job(rng, tmp_path)
    run_mpi("data_parallel_worker.py", tmp_path / "job.pkl", tmp_path / "results.pkl")
    assert_same_training(read_results(tmp_path), single_process_training(job, len(BATCH_SIZES)), size=2)


def test_training_resumes_from_the_checkpoint_rank_0_wrote(run_mpi, tmp_path, rng):
    checkpoint = str(tmp_path / "checkpoint.npz")
    job = make_job(rng, tmp_path, steps=(0, 2), checkpoint_to=checkpoint)
    run_mpi("data_parallel_worker.py", tmp_path / "job.pkl", tmp_path / "results.pkl")
    make_job(np.random.default_rng(0), tmp_path, **{**job, "steps": (2, 4), "resume_from": checkpoint,
                                                    "checkpoint_to": None})
    run_mpi("data_parallel_worker.py", tmp_path / "job.pkl", tmp_path / "results.pkl")
    ref_losses, ref_state = single_process_training(job, 4)
    assert_same_training(read_results(tmp_path), (ref_losses[2:], ref_state), size=2)


def test_without_mpiexec_the_same_script_is_one_process(run_mpi, tmp_path, rng):
    job = make_job(rng, tmp_path)
    run_mpi("data_parallel_worker.py", tmp_path / "job.pkl", tmp_path / "results.pkl", launcher=False)
    assert_same_training(read_results(tmp_path), single_process_training(job, len(BATCH_SIZES)), size=1)


def test_three_ranks_with_unequal_batches_train_like_one_process(run_threads, tmp_path, rng):
    job = make_job(rng, tmp_path)  # batches of 8 and 7: 3 + 3 + 2 and 3 + 2 + 2

    def rank_fn(comm):
        model = worker.build_mlp(*DIMS, rng=np.random.default_rng(100 + comm.rank))
        if comm.is_root:
            model.load_state_dict(job["state"])
        losses = worker.train(model, job, comm)
        return losses, model.state_dict()

    ranks = run_threads(3, rank_fn)
    results = {"size": 3, "losses": ranks[0][0], "states": [state for _, state in ranks]}
    assert all(losses == ranks[0][0] for losses, _ in ranks)
    assert_same_training(results, single_process_training(job, len(BATCH_SIZES)), size=3)


def test_data_parallel_on_a_single_process_is_plain_training_bit_for_bit(rng):
    model = worker.build_mlp(*DIMS, rng=rng)
    reference = worker.build_mlp(*DIMS, rng=rng)
    reference.load_state_dict(model.state_dict())
    dp = DataParallel(model, SingleProcess())
    assert isinstance(dp.model[1], SyncBatchNorm) and dp.is_root and dp.size == 1
    x, y = rng.standard_normal((6, DIMS[0])), rng.integers(0, DIMS[2], 6)
    result = dp.train_step(x, y, softmax_cross_entropy)
    loss, dlogits = softmax_cross_entropy(reference.forward(x), y)
    reference.backward(dlogits)
    assert result.loss == loss and result.local_count == result.global_count == 6
    for p, q in zip(dp.model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


@given(n=st.integers(0, 30), size=st.integers(1, 5))
def test_shards_are_contiguous_nearly_equal_and_cover_everything_in_rank_order(n, size):
    parts = [shard_slice(n, rank, size) for rank in range(size)]
    assert np.concatenate([np.arange(n)[p] for p in parts]).tolist() == list(range(n))
    lengths = [p.stop - p.start for p in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_shard_slice_rejects_a_rank_outside_the_group():
    with pytest.raises(ValueError, match=r"rank must be in \[0, size=2\), got 2"):
        shard_slice(10, 2, 2)


def test_gradients_are_summed_and_a_missing_gradient_counts_as_zero(run_threads):
    def rank_fn(comm):
        model = nn.Sequential(nn.Linear(2, 2, rng=np.random.default_rng(0), dtype=np.float64))
        weight, bias = model.parameters()
        weight.grad = np.full((2, 2), comm.rank + 1.0)
        if comm.rank == 1:
            bias.grad = np.array([1.0, 2.0])  # rank 0 has none
        extras = allreduce_gradients(model, comm, extras=[comm.rank, 10.0])
        return weight.grad, bias.grad, extras

    for weight_grad, bias_grad, extras in run_threads(2, rank_fn):
        np.testing.assert_array_equal(weight_grad, np.full((2, 2), 3.0))
        np.testing.assert_array_equal(bias_grad, [1.0, 2.0])
        np.testing.assert_array_equal(extras, [1.0, 20.0])


def test_a_parameter_without_gradients_anywhere_keeps_none(run_threads):
    def rank_fn(comm):
        model = nn.Linear(2, 2, rng=np.random.default_rng(0))
        allreduce_gradients(model, comm)
        return model.weight.grad

    assert run_threads(2, rank_fn) == [None, None]


def test_the_loss_weights_are_each_ranks_share_of_the_global_batch(run_threads):
    assert run_threads(3, lambda comm: (global_count(comm.rank + 1, comm), loss_weight(comm.rank + 1, comm))) == [
        (6, 1 / 6), (6, 2 / 6), (6, 3 / 6)]
    with pytest.raises(ValueError, match="the global batch is empty"):
        loss_weight(0, SingleProcess())
    with pytest.raises(ValueError, match="local_count must be >= 0, got -1"):
        global_count(-1, SingleProcess())


def test_broadcast_state_makes_every_rank_root_and_check_synchronized_sees_it(run_threads):
    def rank_fn(comm):
        model = worker.build_mlp(*DIMS, rng=np.random.default_rng(comm.rank))
        model[1].num_batches_tracked[...] = comm.rank
        with pytest.raises(RuntimeError, match=r"on ranks \[1\] differ from rank 0's"):
            check_synchronized(model, comm)
        broadcast_state(model, comm)
        check_synchronized(model, comm)
        return model.state_dict()

    root, other = run_threads(2, rank_fn)
    for name in root:
        np.testing.assert_array_equal(other[name], root[name])


def test_broadcast_state_refuses_models_that_differ_on_every_rank(run_threads):
    def rank_fn(comm):
        model = nn.Linear(2, 3 + comm.rank, rng=np.random.default_rng(0))
        with pytest.raises(ValueError, match=r"the state dicts of ranks \[1\] do not match rank 0's"):
            broadcast_state(model, comm)
        return True

    assert run_threads(2, rank_fn) == [True, True]
