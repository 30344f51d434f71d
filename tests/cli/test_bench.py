"""`normlab bench --quick` runs end to end: a table on stdout and the same figures as JSON."""

import json

import pytest

from normlab.cli import main


def test_bench_quick_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench" / "figures.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    table = capsys.readouterr().out
    report = json.loads(path.read_text())

    assert "copy bandwidth" in table and "% limit" in table
    assert "runs 1 timed pass." in table and "timed passes" not in table  # --quick: one pass per turn
    assert report["quick"] and report["bandwidth_gbps"]["limit"] > 0
    norms = [row for row in report["rows"] if "bytes_per_element" in row]
    assert [row["case"].split()[0] for row in norms] == ["batchnorm", "batchnorm", "layernorm", "groupnorm"]
    for row in norms:
        assert row["case"] in table
        assert row["forward_ms"] > 0 and row["backward_ms"] > 0
        elements = 1
        for n in row["shape"]:
            elements *= n
        expected = row["bytes_per_element"]["forward"] * elements / (row["forward_ms"] / 1e3) / 1e9
        assert abs(row["forward_gbps"] - expected) <= 1e-9 * expected
        assert abs(row["total_pct_of_limit"] - 100 * (row["bytes_per_element"]["forward"] + row[
            "bytes_per_element"]["backward"]) * elements / (row["total_ms"] / 1e3) / 1e9
            / report["bandwidth_gbps"]["limit"]) < 1e-6
        if report["machine"]["torch"] is not None:
            assert row["speedup_vs_torch"] == row["torch_total_ms"] / row["total_ms"]
    optional = {row["case"]: row for row in report["rows"] if "bytes_per_element" not in row}
    assert set(optional) == {"conv2d 3x3", "bn-cnn training step"}
    for row in optional.values():
        assert row["available"] or ("n/a (not available)" in table and row["reason"] in table)


def test_bench_rejects_an_unknown_backend(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--quick", "--backend", "cuda"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'cuda'" in capsys.readouterr().err


def test_bench_runs_on_the_threads_asked_for(tmp_path):
    numba = pytest.importorskip("numba")
    path = tmp_path / "one.json"
    assert main(["bench", "--quick", "--threads", "1", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["threads"]["normlab"] == 1 and report["bandwidth_gbps"]["threads"] == 1
    assert report["threads"]["blas"] in (1, None)  # None: no OpenBLAS in this NumPy
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # restored after the run
    if report["machine"]["torch"] is not None:
        assert report["threads"]["torch"] == 1
