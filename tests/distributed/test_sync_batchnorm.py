"""SyncBatchNorm over P processes equals BatchNorm on the concatenated global batch: outputs, input
gradients, parameter gradients (summed over the processes) and running statistics (on every process), for
unequal local batches, a local batch of one and an empty one; under mpiexec and, for many random splits,
with threads in this process."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import nn
from normlab.distributed import SingleProcess, SyncBatchNorm, convert_sync_batchnorm
from normlab.gradcheck import numerical_gradient, relative_error

TOL = 1e-10


def make_case(rng, shape, counts, steps=2, momentum=0.1):
    c = shape[1]
    return {
        "x": rng.standard_normal((steps, *shape)) * 3 + 10,  # far from zero: the merge must not cancel
        "dout": rng.standard_normal((steps, *shape)),
        "gamma": rng.standard_normal(c), "beta": rng.standard_normal(c),
        "momentum": momentum, "counts": list(counts),
    }


def reference_run(case):
    """The case on one process: BatchNorm on the whole batch."""
    steps, n, c = case["x"].shape[:3]
    bn = (nn.BatchNorm1d if case["x"].ndim <= 4 else nn.BatchNorm2d)(c, momentum=case["momentum"], dtype=np.float64)
    bn.weight.data[...], bn.bias.data[...] = case["gamma"], case["beta"]
    record = {"out": [], "dx": [], "dgamma": [], "dbeta": []}
    for step in range(steps):
        bn.zero_grad()
        record["out"].append(bn.forward(case["x"][step]))
        record["dx"].append(bn.backward(case["dout"][step]))
        record["dgamma"].append(bn.weight.grad.copy())
        record["dbeta"].append(bn.bias.grad.copy())
    record["state"] = bn.state_dict()
    bn.eval()
    record["eval_out"] = bn.forward(case["x"][-1])
    return record


def run_case(case, comm):
    """The case's part on one rank (the same code as the mpiexec worker, on a thread)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "scripts" / "sync_batchnorm_worker.py"
    spec = importlib.util.spec_from_file_location("sync_batchnorm_worker", path)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker.run_case(case, comm)


def assert_matches_reference(case, ranks):
    """`ranks`: each rank's record, in rank order."""
    ref = reference_run(case)
    for step in range(len(ref["out"])):
        for key in ("out", "dx"):
            got = np.concatenate([r[key][step] for r in ranks])
            np.testing.assert_allclose(got, ref[key][step], rtol=TOL, atol=TOL, err_msg=f"{key}, step {step}")
        for key in ("dgamma", "dbeta"):  # local sums; the data-parallel all-reduce adds them up
            got = sum(r[key][step] for r in ranks)
            np.testing.assert_allclose(got, ref[key][step], rtol=TOL, atol=TOL, err_msg=f"{key}, step {step}")
    for rank, r in enumerate(ranks):
        assert list(r["state"]) == list(ref["state"])
        for name, value in ref["state"].items():
            np.testing.assert_allclose(r["state"][name], value, rtol=TOL, atol=TOL, err_msg=f"{name}, rank {rank}")
            np.testing.assert_array_equal(r["state"][name], ranks[0]["state"][name])  # bitwise identical
    np.testing.assert_allclose(np.concatenate([r["eval_out"] for r in ranks]), ref["eval_out"], rtol=TOL, atol=TOL)


MPI_CASES = [  # (shape of one step's global batch, local batch sizes of ranks 0 and 1, momentum)
    ((8, 4), (3, 5), 0.1),
    ((8, 3, 2, 2), (3, 5), None),  # spatial, cumulative running average
    ((5, 4), (1, 4), 0.1),  # one sample on rank 0: local batch norm could not even train
    ((4, 4), (0, 4), 0.1),  # nothing on rank 0
]


def test_sync_batchnorm_under_mpiexec_equals_batchnorm_on_the_global_batch(run_mpi, tmp_path, rng):
    """Two MPI processes, each with nn.SyncBatchNorm built without a communicator (it finds world())."""
    cases = [make_case(rng, shape, counts, momentum=momentum) for shape, counts, momentum in MPI_CASES]
    with open(tmp_path / "cases.pkl", "wb") as f:
        pickle.dump(cases, f)
    run_mpi("sync_batchnorm_worker.py", tmp_path / "cases.pkl", tmp_path / "results.pkl")
    with open(tmp_path / "results.pkl", "rb") as f:
        results = pickle.load(f)
    assert results["size"] == 2
    for case, ranks in zip(cases, results["records"]):
        assert [len(r["out"][0]) for r in ranks] == case["counts"]
        assert_matches_reference(case, ranks)


@settings(max_examples=15, deadline=None)
@given(data=st.data(), size=st.integers(2, 3), spatial=st.booleans())
def test_sync_batchnorm_equals_batchnorm_for_random_splits(run_threads, data, size, spatial):
    counts = data.draw(st.lists(st.integers(0, 4), min_size=size, max_size=size).filter(lambda c: sum(c) >= 2))
    momentum = data.draw(st.sampled_from([0.1, 0.5, None]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (sum(counts), 3, 2, 3) if spatial else (sum(counts), 3)
    case = make_case(rng, shape, counts, momentum=momentum)
    assert_matches_reference(case, run_threads(size, lambda comm: run_case(case, comm)))


def test_sync_batchnorm_gradients_match_numerical_gradients(run_threads, rng):
    """d/dx, d/dgamma and d/dbeta of sum(out * dout) over the global batch, taken through both ranks."""
    counts, c = (2, 3), 3
    x = rng.standard_normal((sum(counts), c)) * 2 + 1
    dout = rng.standard_normal(x.shape)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    offsets = np.cumsum([0, *counts])

    def on_ranks(x, gamma, beta, backward=False):
        def rank_fn(comm):
            part = slice(offsets[comm.rank], offsets[comm.rank + 1])
            bn = SyncBatchNorm(c, dtype=np.float64, comm=comm)
            bn.weight.data[...], bn.bias.data[...] = gamma, beta
            out = bn.forward(x[part])
            if not backward:
                return out
            return bn.backward(dout[part]), bn.weight.grad, bn.bias.grad

        return run_threads(2, rank_fn)

    ranks = on_ranks(x, gamma, beta, backward=True)
    dx = np.concatenate([r[0] for r in ranks])
    dgamma, dbeta = sum(r[1] for r in ranks), sum(r[2] for r in ranks)
    for name, analytic, arg in (("x", dx, 0), ("gamma", dgamma, 1), ("beta", dbeta, 2)):
        def f(v, arg=arg):
            args = [x, gamma, beta]
            args[arg] = v
            return np.concatenate(on_ranks(*args))

        value = [x, gamma, beta][arg]
        assert relative_error(analytic, numerical_gradient(f, value, dout)) < 1e-8, name


def test_sync_batchnorm_matches_torch_batchnorm_on_the_global_batch(run_threads, rng):
    torch = pytest.importorskip("torch")
    counts, c = (3, 5), 4
    x = rng.standard_normal((sum(counts), c, 3)) * 2 + 5
    dout = rng.standard_normal(x.shape)
    tbn = torch.nn.BatchNorm1d(c, dtype=torch.float64)
    tx = torch.tensor(x, requires_grad=True)
    tbn(tx).backward(torch.tensor(dout))

    def rank_fn(comm):
        part = slice(3 * comm.rank, 3 + 5 * comm.rank)
        bn = SyncBatchNorm(c, dtype=np.float64, comm=comm)
        bn.forward(x[part])
        return bn.backward(dout[part]), bn.weight.grad, bn.running_var

    ranks = run_threads(2, rank_fn)
    np.testing.assert_allclose(np.concatenate([r[0] for r in ranks]), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ranks[0][1] + ranks[1][1], tbn.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    for r in ranks:
        np.testing.assert_allclose(r[2], tbn.running_var.numpy(), rtol=1e-12)


def test_float32_input_gives_float32_output_and_gradient(run_threads, rng):
    x = (rng.standard_normal((6, 4)) * 3 + 10).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    ref = nn.BatchNorm1d(4)
    ref_out, ref_dx = ref.forward(x), ref.backward(dout)

    def rank_fn(comm):
        bn = SyncBatchNorm(4, comm=comm)
        part = slice(3 * comm.rank, 3 * comm.rank + 3)
        return bn.forward(x[part]), bn.backward(dout[part]), bn.running_mean

    ranks = run_threads(2, rank_fn)
    out, dx = np.concatenate([r[0] for r in ranks]), np.concatenate([r[1] for r in ranks])
    assert out.dtype == dx.dtype == ranks[0][2].dtype == np.float32
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, atol=1e-5)
    np.testing.assert_allclose(ranks[0][2], ref.running_mean, rtol=1e-6)


def test_a_global_batch_of_one_value_per_channel_is_an_error_on_every_rank(run_threads, rng):
    x = rng.standard_normal((1, 3))

    def rank_fn(comm):
        bn = SyncBatchNorm(3, dtype=np.float64, comm=comm)
        with pytest.raises(ValueError, match="more than 1 value per channel over all 2 processes"):
            bn.forward(x if comm.rank == 0 else x[:0])
        return True

    assert run_threads(2, rank_fn) == [True, True]


class NoCollectives(SingleProcess):
    """Claims two processes but fails any collective: for code that must not communicate."""

    size = 2

    def _allgather(self, buf, out):
        raise AssertionError("communicated")

    _allreduce_sum = _broadcast = _allgather


def test_evaluation_mode_uses_running_statistics_without_communicating(rng):
    x = rng.standard_normal((5, 3, 2, 2))
    ref = nn.BatchNorm2d(3, dtype=np.float64)
    ref.running_mean[...], ref.running_var[...] = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    bn = convert_sync_batchnorm(nn.Sequential(ref), NoCollectives())[0]
    bn.eval()
    dout = rng.standard_normal(x.shape)
    out, dx = bn.forward(x), bn.backward(dout)
    ref_bn = nn.BatchNorm2d(3, dtype=np.float64)
    ref_bn.load_state_dict(bn.state_dict())
    ref_bn.eval()
    np.testing.assert_array_equal(out, ref_bn.forward(x))
    np.testing.assert_array_equal(dx, ref_bn.backward(dout))


def test_batch_statistics_in_evaluation_mode_stay_local(rng):
    x = rng.standard_normal((5, 3))
    bn = SyncBatchNorm(3, track_running_stats=False, dtype=np.float64, comm=NoCollectives()).eval()
    ref = nn.BatchNorm1d(3, track_running_stats=False, dtype=np.float64).eval()
    np.testing.assert_array_equal(bn.forward(x), ref.forward(x))


def test_on_a_single_process_it_is_batchnorm_bit_for_bit(rng):
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    ref, bn = nn.BatchNorm1d(4, dtype=np.float64), SyncBatchNorm(4, dtype=np.float64, comm=SingleProcess())
    np.testing.assert_array_equal(bn.forward(x), ref.forward(x))
    np.testing.assert_array_equal(bn.backward(dout), ref.backward(dout))
    for name, value in ref.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[name], value)


def test_convert_sync_batchnorm_swaps_every_batchnorm_and_keeps_names_order_and_state(rng):
    model = nn.Sequential(nn.Linear(4, 6, rng=rng), nn.BatchNorm1d(6), nn.ReLU(),
                          nn.Sequential(nn.Linear(6, 6, rng=rng), nn.BatchNorm1d(6, affine=False, momentum=None)),
                          nn.Linear(6, 2, rng=rng))
    model[1].running_mean[...] = rng.standard_normal(6)
    state, weight = model.state_dict(), model[1].weight
    comm = SingleProcess()
    assert convert_sync_batchnorm(model, comm) is model
    assert [type(m).__name__ for m in model] == ["Linear", "SyncBatchNorm", "ReLU", "Sequential", "Linear"]
    inner = model[3][1]
    assert isinstance(inner, SyncBatchNorm) and inner.momentum is None and not inner.affine and inner.comm is comm
    assert model[1].weight is weight  # shared, not copied
    converted = model.state_dict()
    assert list(converted) == list(state)
    for name, value in state.items():
        np.testing.assert_array_equal(converted[name], value)


def test_convert_keeps_the_input_rank_check_of_batchnorm2d():
    sync = convert_sync_batchnorm(nn.BatchNorm2d(3), SingleProcess())
    assert isinstance(sync, SyncBatchNorm)
    with pytest.raises(ValueError, match="expected 4D input, got 2D input"):
        sync.forward(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("layer", [nn.BatchRenorm1d(3), nn.GhostBatchNorm1d(3, virtual_batch_size=2)])
def test_convert_refuses_a_batchnorm_whose_math_it_does_not_know(layer):
    with pytest.raises(TypeError, match=f"got {type(layer).__name__}, whose math SyncBatchNorm would not reproduce"):
        convert_sync_batchnorm(nn.Sequential(layer), SingleProcess())
