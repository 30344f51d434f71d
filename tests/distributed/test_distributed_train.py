"""`normlab train --distributed`: under `mpiexec -n 2` it equals a single-process run of the same
configuration (SyncBatchNorm, the same global batches) up to float32 rounding; without mpiexec it is the
normal run, bit for bit; resume, stop requests seen by one rank, and the refusal to train alone under mpiexec."""

import json
import re

import numpy as np
import pytest
from safetensors.numpy import load_file

DATA = "/usr/share/datasets/fashion-mnist"
# SGD: Adam divides by sqrt(v), which turns the float32 rounding differences of near-zero gradients into
# visible ones; SGD keeps them at rounding size, so the comparison below can be tight.
ARGS = ("--data-dir", DATA, "--no-download", "--limit", "1200", "--val-size", "200", "--epochs", "1",
        "--hidden", "32", "16", "--batch-size", "50", "--optimizer", "sgd", "--lr", "0.05", "--no-progress")
FILES = ("config.json", "distributed.json", "history.json", "model.safetensors", "checkpoint.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_mpi):
    """The same configuration four ways; returns {name: (run dir, CompletedProcess)}."""
    root = tmp_path_factory.mktemp("runs")
    launches = {"mpi": ("--distributed",), "mpi_local_bn": ("--distributed", "--no-sync-bn")}
    done = {}
    for name, extra in launches.items():
        done[name] = run_mpi("normlab", "train", *extra, *ARGS, "--out", root / name, module=True)
    done["alone"] = run_mpi("normlab", "train", *ARGS, "--out", root / "alone", module=True, launcher=False)
    done["alone_distributed"] = run_mpi("normlab", "train", "--distributed", *ARGS, "--out",
                                        root / "alone_distributed", module=True, launcher=False)
    return {name: (root / name, process) for name, process in done.items()}


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def test_rank_0_writes_the_run_directory_and_prints_once(runs):
    run_dir, process = runs["mpi"]
    for name in FILES:
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "distributed.json").read_text()) == {"processes": 2, "sync_batchnorm": True}
    assert json.loads((run_dir / "config.json").read_text())["batch_size"] == 50  # the global batch
    assert process.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert process.stdout.count("epoch 1/1") == 1
    assert re.search(r"on 2 processes \(synchronized batch norm; \d+ threads? each: 2 processes on this node's \d+ "
                     r"cores, OPENBLAS_NUM_THREADS, OMP_NUM_THREADS kept as set\)", process.stdout)
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 1000 // 50 and history["test_acc"] > 0.5


def test_two_ranks_with_sync_batchnorm_equal_one_process(runs):
    distributed, alone = weights(runs["mpi"][0]), weights(runs["alone"][0])
    assert list(distributed) == list(alone)
    for name, value in alone.items():
        # float32 rounding: the ranks' partial sums are added in another order than one process's sums.
        np.testing.assert_allclose(distributed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    losses = [json.loads((runs[k][0] / "history.json").read_text())["loss"] for k in ("mpi", "alone")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_local_batchnorm_on_two_ranks_differs_from_one_process(runs):
    # The same run with per-rank statistics (batches of 25) is another computation: the comparison above
    # can fail.
    local, alone = weights(runs["mpi_local_bn"][0]), weights(runs["alone"][0])
    assert json.loads((runs["mpi_local_bn"][0] / "distributed.json").read_text())["sync_batchnorm"] is False
    assert max(np.abs(local[k] - alone[k]).max() for k in alone) > 1e-3


def test_distributed_without_mpiexec_is_the_normal_run_bit_for_bit(runs):
    single, alone = weights(runs["alone_distributed"][0]), weights(runs["alone"][0])
    assert list(single) == list(alone)
    for name, value in alone.items():
        np.testing.assert_array_equal(single[name], value, err_msg=name)
    histories = [json.loads((runs[k][0] / "history.json").read_text()) for k in ("alone_distributed", "alone")]
    assert histories[0]["loss"] == histories[1]["loss"]


def test_mpiexec_without_distributed_is_refused(run_mpi, tmp_path):
    process = run_mpi("normlab", "train", *ARGS, "--out", tmp_path / "run", module=True, check=False)
    assert process.returncode != 0
    assert "without --distributed" in process.stderr and "add --distributed" in process.stderr
    assert not (tmp_path / "run").exists()


def test_sync_bn_needs_distributed(run_mpi, tmp_path):
    process = run_mpi("normlab", "train", "--sync-bn", *ARGS, "--out", tmp_path / "run", module=True,
                      launcher=False, check=False)
    assert process.returncode == 2 and "--sync-bn/--no-sync-bn needs --distributed" in process.stderr


def test_resume_and_a_stop_seen_by_one_rank(run_mpi, tmp_path):
    run_mpi("distributed_train_worker.py", tmp_path, timeout=40)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["size"] == 2
    runs = results["runs"]
    assert runs["whole"] == [["completed", 10]] * 2
    assert runs["paused"] == [["paused", 3]] * 2
    assert runs["resumed"] == [["completed", 10]] * 2
    # Rank 1 alone asked to stop after iteration 2; every rank stopped together after iteration 3.
    assert runs["stopped"] == [["interrupted", 3]] * 2
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    for name, value in whole.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)  # the same reductions, the same bits
    histories = [json.loads((tmp_path / k / "history.json").read_text()) for k in ("whole", "resumed")]
    assert histories[0]["loss"] == histories[1]["loss"]


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_regularization_gradient_counts_once_over_the_ranks(run_threads, ranks):
    """DistributedTrainer's step is Trainer's (`data_parallel_step`): with an L2 penalty strong enough that
    counting it on every rank would show, P thread ranks (unequal parts of each batch of 10) train to the
    single-process weights and losses, up to the order of float64 sums."""
    from normlab.models import FullyConnectedNet
    from normlab.optim import SGD
    from normlab.train import Trainer
    from normlab.train.distributed_trainer import DistributedTrainer

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 6)), rng.integers(0, 3, 30)

    def train(trainer_class, **comm):
        model = FullyConnectedNet(6, (8,), 3, reg=0.5, normalization="none", rng=np.random.default_rng(1), dtype=np.float64)
        trainer = trainer_class(model, SGD(model.parameters(), lr=0.1), x, y, None, None, epochs=2, batch_size=10,
                                rng=np.random.default_rng(2), schedule=None, progress=False, log=lambda _: None,
                                **comm)
        assert trainer.fit().ok
        return model.state_dict(), trainer.history.loss

    alone_state, alone_losses = train(Trainer)
    for state, losses in run_threads(ranks, lambda comm: train(DistributedTrainer, comm=comm)):
        np.testing.assert_allclose(losses, alone_losses, rtol=1e-12)
        for name, value in alone_state.items():
            np.testing.assert_allclose(state[name], value, rtol=1e-10, atol=1e-12, err_msg=name)
