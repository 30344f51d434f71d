"""check_file on correct implementations, on files it cannot check, and the parts of the report beyond
the catalogue: staged variables found by value, the numerical-gradient verdict, what a call raised."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from normlab.check import check_file
from normlab.check.families import KNOWN_NAMES

FIXTURES = Path(__file__).parent / "fixtures"


def test_correct_cs231n_implementation_passes_every_function_quickly():
    start = time.perf_counter()
    report = check_file(FIXTURES / "cs231n_correct.py", isolate=False)
    assert time.perf_counter() - start < 5
    assert report.passed and report.exit_code == 0, report.to_text()
    assert {f.name for f in report.functions} == {
        "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt", "layernorm_forward",
        "layernorm_backward", "spatial_batchnorm_forward", "spatial_batchnorm_backward",
        "spatial_groupnorm_forward", "spatial_groupnorm_backward"}
    assert all(f.family.startswith("cs231n-") for f in report.functions)
    # Real comparisons happened: every output of every call, with float64 agreement.
    errors = [o.error for f in report.functions for c in f.calls for o in c.outputs]
    assert len(errors) > 130 and max(errors) < 1e-11


@pytest.mark.parametrize("fixture", ["normlab_correct.py", "normlab_reexport.py"])
def test_normlab_signature_implementations_pass(fixture):
    report = check_file(FIXTURES / fixture, isolate=False)
    assert report.exit_code == 0, report.to_text()
    assert all(f.family.startswith("normlab-") for f in report.functions)
    batchnorm = next(f for f in report.functions if f.name == "batchnorm_forward")
    assert any(c.case == "images" for c in batchnorm.calls)  # normlab's batch norm also takes (N, C, H, W)


def test_staged_nodes_are_found_by_value_where_the_names_differ(broken_file):
    path = broken_file("cs231n_correct.py", "batchnorm_backward", [
        ("dxhat = dgammax * gamma", "g = dgammax * gamma"),
        ("divar = np.sum(dxhat * xmu, axis=0)", "divar = np.sum(g * xmu, axis=0)"),
        ("dxmu1 = dxhat * ivar", "dxmu1 = g * ivar"),
        ("dsqrtvar = -1.0 / (sqrtvar**2) * divar", "dsqrtvar = 1.0 / (sqrtvar**2) * divar"),
    ])
    function = next(f for f in check_file(path, isolate=False).functions if f.name == "batchnorm_backward")
    step = function.first_wrong_step
    assert step.node == "dsqrtvar" and step.formula == "-1 / sqrtvar**2 * divar"
    assert [(m.node, m.right) for m in step.inputs] == [("divar", True), ("sqrtvar", True)]
    assert step.got == pytest.approx([-v for v in step.expected])
    found = {m.node: m.variable for m in function.nodes}
    assert found["dxhat"] == "g" and found["divar"] == "divar"


def test_backward_consistent_with_a_wrong_forward_is_told_to_fix_the_forward(tmp_path):
    source = (FIXTURES / "cs231n_correct.py").read_text()
    source = source.replace("out = gammax + beta", "out = gammax + 2 * beta").replace(
        "dbeta = np.sum(dout, axis=0)", "dbeta = 2 * np.sum(dout, axis=0)")
    path = tmp_path / "layers.py"
    path.write_text(source)
    functions = {f.name: f for f in check_file(path, isolate=False).functions}
    assert functions["batchnorm_forward"].status == "fail"
    backward = functions["batchnorm_backward"]
    assert all(g.passed for g in backward.gradient_check)
    assert "fix the forward first" in backward.verdict
    alt = functions["batchnorm_backward_alt"]  # unchanged: right, so its dbeta does not match the forward
    assert alt.passed and [g.output for g in alt.gradient_check if not g.passed] == ["dbeta"]
    assert "is wrong" in alt.verdict


def test_backward_wrong_against_a_right_forward_is_located_in_the_backward(broken_file):
    path = broken_file("cs231n_correct.py", "batchnorm_backward", [("dx = dx1 + dx2", "dx = dx1 - dx2")])
    backward = next(f for f in check_file(path, isolate=False).functions if f.name == "batchnorm_backward")
    assert "the mistake is in the backward" in backward.verdict
    assert [g.output for g in backward.gradient_check if not g.passed] == ["dx"]


def test_what_a_call_raised_is_reported_with_the_line(broken_file):
    path = broken_file("cs231n_correct.py", "layernorm_backward",
                       [("dx = dx1 + dx2", "dx = dx1 + dx2.T")])
    report = check_file(path, isolate=False)
    backward = next(f for f in report.functions if f.name == "layernorm_backward")
    raised = [c.exception for c in backward.calls if c.exception]
    assert raised and "ValueError" in raised[0] and "layers.py line" in raised[0]
    assert "dx = dx1 + dx2.T" in raised[0]
    assert any(c.passed is False and c.exception is None for c in backward.calls) or len(raised) == len(backward.calls)


def test_a_backward_returning_the_wrong_thing_is_named(broken_file):
    path = broken_file("cs231n_correct.py", "batchnorm_backward_alt", [("return dx, dgamma, dbeta", "return dx")])
    alt = next(f for f in check_file(path, isolate=False).functions if f.name == "batchnorm_backward_alt")
    assert alt.status == "fail"
    assert "expected (dx, dgamma, dbeta)" in alt.calls[0].exception


def test_file_that_cannot_be_checked_exits_2(tmp_path):
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    report = check_file(empty, isolate=False)
    assert report.exit_code == 2 and not report.functions
    assert "batchnorm_forward" in report.notes[-1] and len(KNOWN_NAMES) > 10

    broken = tmp_path / "syntax.py"
    broken.write_text("def batchnorm_forward(x:\n")
    report = check_file(broken, isolate=False)
    assert report.exit_code == 2 and "SyntaxError" in report.load_error

    with pytest.raises(FileNotFoundError, match="no such file"):
        check_file(tmp_path / "missing.py")


def test_functions_that_cannot_be_checked_are_noted(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text("def batchnorm_forward(x):\n    return x, None\n\n"
                    "def layernorm_backward(dout, cache):\n    return dout, None, None\n")
    report = check_file(path, isolate=False)
    assert report.exit_code == 2
    assert any("neither CS231n's nor normlab's signature" in n for n in report.notes)
    assert any("layernorm_backward found without its forward layernorm_forward" in n for n in report.notes)


def test_the_example_of_the_docs_finds_its_three_mistakes():
    report = check_file(FIXTURES / "cs231n_broken_example.py", isolate=False)
    functions = {f.name: f for f in report.functions}
    assert [f.name for f in report.functions if not f.passed] == [
        "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt"]
    assert any("momentum is the wrong way round" in d for d in functions["batchnorm_forward"].diagnoses)
    assert functions["batchnorm_backward"].first_wrong_step.node == "dsq"
    assert "the mistake is in the backward" in functions["batchnorm_backward"].verdict
    diagnoses = functions["batchnorm_backward_alt"].diagnoses
    assert any("dgamma has shape (1, 5) where (5,) is expected" in d for d in diagnoses)


def test_outputs_returned_in_the_wrong_order_are_named(broken_file):
    path = broken_file("cs231n_correct.py", "batchnorm_backward_alt",
                       [("return dx, dgamma, dbeta", "return dx, dbeta, dgamma")])
    alt = next(f for f in check_file(path, isolate=False).functions if f.name == "batchnorm_backward_alt")
    assert any("dgamma equals the expected dbeta: the outputs are returned in the wrong order" in d
               for d in alt.diagnoses)


def test_forward_intermediates_are_found_in_a_dict_cache(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text(
        "import numpy as np\n\n"
        "def layernorm_forward(x, gamma, beta, ln_param):\n"
        "    cache = {'mean': x.mean(axis=1, keepdims=True)}\n"
        "    cache['std'] = np.sqrt(x.var(axis=1, keepdims=True))\n"
        "    cache['x_norm'] = (x - cache['mean']) / cache['std']\n"
        "    return gamma * cache['x_norm'] + beta, cache\n")
    forward = check_file(path, isolate=False).functions[0]
    step = forward.first_wrong_step
    assert forward.first_wrong_case == "tiny-variance"  # elsewhere the variance dwarfs eps
    assert (step.node, step.variable, step.formula) == ("sqrtvar", "cache['std']", "sqrt(var + 0.0001)")
    assert "eps is missing: sqrt(var) where sqrt(var + eps) is needed" in step.diagnoses
    assert {m.node: m.right for m in forward.nodes}["mu"] is True
