"""`normlab explain`: one line per node, generated from the graph. (tests/autograd/test_steps.py holds
the graph's steps equal to those of `staged_backward`, parsed from its source.)"""

import re
import subprocess
import sys

import numpy as np
import pytest

from normlab.autograd import GraphView, sample_graph
from normlab.cli import main


def _backward_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("Backward")) + 2
    return lines[start:]


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
def test_explain_prints_the_staged_backward_steps_one_line_per_node(kind, capsys):
    assert main(["explain", kind]) == 0
    backward = _backward_lines(capsys.readouterr().out)
    names = [line.split()[0] for line in backward]
    steps = GraphView(sample_graph(kind, rng=np.random.default_rng(0)).out).steps
    assert names == [s.gradient for s in steps]
    assert names == ["dout", "dbeta", "dgammax", "dgamma", "dxhat", "divar", "dsqrtvar", "dvar", "dsq", "dxmu",
                     "dmu", "dx"]
    for line in backward:
        assert re.match(r"^  d\w+\s+\(\d+(, \d+)*,?\)\s+= \S", line), line


def test_explain_shows_local_gradient_times_upstream_with_shapes(capsys):
    assert main(["explain", "batchnorm", "--shape", "5,2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Batch norm on x of shape (5, 2)\n")
    assert re.search(r"^  dsq\s+\(5, 2\)\s+= 1/5 \* dvar$", out, flags=re.M)
    assert re.search(r"^  divar\s+\(1, 2\)\s+= sum\(xmu \* dxhat, axis=0\)$", out, flags=re.M)
    assert re.search(r"^  sqrtvar\s+\(1, 2\)\s+= sqrt\(var \+ 1e-05\)$", out, flags=re.M)


def test_explain_layernorm_reduces_over_the_features(capsys):
    assert main(["explain", "layernorm"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  mu\s+\(4, 1\)\s+= mean\(x, axis=1\)$", out, flags=re.M)
    assert re.search(r"^  dgamma\s+\(3,\)\s+= sum\(xhat \* dgammax, axis=0\)$", out, flags=re.M)


def test_explain_groupnorm_walks_through_the_reshapes(capsys):
    assert main(["explain", "groupnorm", "--groups", "4"]) == 0
    names = [line.split()[0] for line in _backward_lines(capsys.readouterr().out)]
    assert names[-2:] == ["dxg", "dx"] and "dxhatg" in names


def test_explain_runs_as_a_command():
    result = subprocess.run([sys.executable, "-m", "normlab", "explain", "batchnorm"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert "dxmu" in result.stdout and result.stderr == ""
