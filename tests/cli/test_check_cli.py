"""`normlab check FILE`: exit status, the JSON schema, and a learner's infinite loop or crash ending with a
message (the learner's code runs in a child process here, as on the command line)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from normlab.cli import main

FIXTURES = Path(__file__).parents[1] / "check" / "fixtures"


def test_correct_file_exits_0(capsys):
    assert main(["check", str(FIXTURES / "cs231n_correct.py")]) == 0
    out = capsys.readouterr().out
    assert "PASS: all 9 functions" in out and "batchnorm_backward_alt  [cs231n-batchnorm]  PASS" in out


def test_broken_file_exits_1_and_names_function_output_and_step(tmp_path, capsys):
    source = (FIXTURES / "cs231n_correct.py").read_text()
    path = tmp_path / "layers.py"
    path.write_text(source.replace("dsqrtvar = -1.0 / (sqrtvar**2) * divar", "dsqrtvar = 1.0 / (sqrtvar**2) * divar"))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "batchnorm_backward  [cs231n-batchnorm]  FAIL" in out
    assert "dx: dsqrtvar has the opposite sign" in out
    assert "first wrong step (main case): dsqrtvar" in out
    assert "expected: dsqrtvar (1, 5) = -1 / sqrtvar**2 * divar" in out
    assert "FAIL: 1 of 9 functions (batchnorm_backward)" in out


def test_json_follows_the_documented_schema(tmp_path, capsys):
    source = (FIXTURES / "cs231n_correct.py").read_text()
    path = tmp_path / "layers.py"
    path.write_text(source.replace("dbeta = np.sum(dout, axis=0)", "dbeta = np.mean(dout, axis=0)"))
    assert main(["check", str(path), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "normlab-check/1"
    assert set(document) == {"schema", "file", "passed", "exit_code", "seconds", "load_error", "notes", "functions"}
    assert document["passed"] is False and document["exit_code"] == 1
    functions = {f["name"]: f for f in document["functions"]}
    assert set(functions["batchnorm_backward"]) == {
        "name", "family", "role", "status", "passed", "message", "verdict", "diagnoses", "calls", "gradient_check",
        "first_wrong_step", "nodes"}
    backward = functions["batchnorm_backward"]
    assert backward["status"] == "fail" and backward["role"] == "backward"
    call = backward["calls"][0]
    assert set(call) == {"case", "step", "mode", "passed", "exception", "outputs"}
    dbeta = next(o for o in call["outputs"] if o["name"] == "dbeta")
    assert set(dbeta) == {"name", "passed", "relative_error", "threshold", "expected_shape", "shape", "diagnoses",
                          "mistakes"}
    assert dbeta["mistakes"] == ["dbeta_mean"] and dbeta["expected_shape"] == [5] and dbeta["threshold"] == 1e-7
    step = backward["first_wrong_step"]
    assert step["node"] == "dbeta" and step["case"] == "main" and step["formula"] == "sum(1 * dout, axis=0)"
    assert {"node", "variable", "right", "relative_error"} == set(step["inputs"][0])
    assert [g["output"] for g in backward["gradient_check"] if not g["passed"]] == ["dbeta"]
    assert functions["batchnorm_forward"]["passed"] is True


def test_infinite_loop_and_crash_end_with_a_message_and_the_rest_is_checked(tmp_path, capsys):
    path = tmp_path / "layers.py"
    path.write_text(
        "import os\nimport numpy as np\n\n"
        "def layernorm_forward(x, gamma, beta, ln_param):\n"
        "    xhat = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + ln_param['eps'])\n"
        "    return gamma * xhat + beta, None\n\n"
        "def layernorm_backward(dout, cache):\n    while True:\n        pass\n\n"
        "def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):\n    os._exit(3)\n")
    start = time.perf_counter()
    assert main(["check", str(path), "--timeout", "1", "--json"]) == 1
    assert time.perf_counter() - start < 30
    functions = {f["name"]: f for f in json.loads(capsys.readouterr().out)["functions"]}
    assert functions["layernorm_forward"]["status"] == "pass"
    assert functions["layernorm_backward"]["status"] == "timeout"
    assert "did not return within 1 s" in functions["layernorm_backward"]["message"]
    assert functions["spatial_groupnorm_forward"]["status"] == "crash"
    assert "exit code 3" in functions["spatial_groupnorm_forward"]["message"]


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.py")]) == 2
    assert "FILE must be an existing Python file" in capsys.readouterr().err
    for bad in ("0", "nan", "inf"):
        assert main(["check", str(FIXTURES / "cs231n_correct.py"), "--timeout", bad]) == 2
        assert "--timeout must be a positive, finite number of seconds" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("")
    assert main(["check", str(empty)]) == 2


def test_the_timeout_applies_to_each_call_not_to_the_numerical_gradients_many_calls(tmp_path, capsys):
    # The numerical gradient calls the forward 2 * (x.size + gamma.size + beta.size) times (60 for layer norm's
    # main case): at 30 ms a call, more than the 1 s limit together, each call far below it.
    source = (FIXTURES / "cs231n_correct.py").read_text()
    path = tmp_path / "layers.py"
    header = "def layernorm_forward(x, gamma, beta, ln_param):\n"
    path.write_text(source.replace(header, header + "    __import__('time').sleep(0.03)\n"))
    assert main(["check", str(path), "--timeout", "1"]) == 0
    out = capsys.readouterr().out
    assert "TIMEOUT" not in out and "layernorm_forward  [cs231n-layernorm]  PASS" in out
