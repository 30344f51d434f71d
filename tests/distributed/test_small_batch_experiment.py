"""The small-batch experiment (`normlab.distributed.small_batch_experiment --quick`) under mpiexec -n 2:
it writes results.json, summary.md and accuracy.png, consistent with each other."""

import json

import numpy as np


def test_quick_experiment_writes_results_table_and_plot(run_mpi, tmp_path):
    process = run_mpi("normlab.distributed.small_batch_experiment", "--quick", "--out", tmp_path, module=True,
                      timeout=40)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["processes"] == 2 and results["settings"]["quick"] is True
    runs = results["runs"]
    assert sorted((r["per_rank_batch"], r["batchnorm"]) for r in runs) == [
        (2, "local"), (2, "sync"), (4, "local"), (4, "sync")]
    for r in runs:
        assert r["global_batch"] == 2 * r["per_rank_batch"]
        assert r["steps"] == 400 // r["global_batch"]  # full global batches only
        assert 0.0 <= r["test_acc"] <= 1.0 and np.isfinite(r["final_train_loss"])
    summary = (tmp_path / "summary.md").read_text()
    for r in runs:
        assert f"{r['test_acc']:.4f}" in summary  # the table shows the measured numbers
    assert "| 2 | 4 |" in summary and "| 4 | 8 |" in summary
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sync - local" in process.stdout


def test_experiment_refuses_a_single_process(run_mpi, tmp_path):
    process = run_mpi("normlab.distributed.small_batch_experiment", "--quick", "--out", tmp_path, module=True,
                      launcher=False, check=False)
    assert process.returncode == 2 and "needs several processes" in process.stderr
