"""The notebooks in docs/notebooks run from top to bottom without an error (their own asserts check the
math), and are committed with the outputs of such a run."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install 'normlab[test]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install 'normlab[test]')")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install 'normlab[test]')")

NOTEBOOKS = sorted((Path(__file__).parents[2] / "docs" / "notebooks").glob("*.ipynb"))


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_there_is_a_batch_norm_notebook():
    assert [p.name for p in NOTEBOOKS] == ["batchnorm.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_committed_notebook_has_the_outputs_of_a_full_run(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert all(c.outputs for c in code)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_notebook_runs_without_errors(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", record_timing=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error
    text = "\n".join(_text(c) for c in notebook.cells if c.cell_type == "code")
    if path.name == "batchnorm.ipynb":
        assert "dx sums to zero over the batch: True" in text
        assert "dsqrtvar  (1, 3)  = -1 / sqrtvar**2 * divar" in text
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
        assert any("image/svg+xml" in o.get("data", {}) for o in outputs)  # the graph, drawn
        assert any("<iframe" in o.get("data", {}).get("text/html", "") for o in outputs)  # the page
