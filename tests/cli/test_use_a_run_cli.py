"""normlab evaluate, predict and export on a trained run (the session's `trained_run` fixture)."""

import json
import re

import numpy as np
import pytest
from optional import require
from PIL import Image

from normlab.cli import main
from normlab.data import load_dataset


def test_evaluate_prints_per_class_accuracy_and_writes_a_confusion_matrix(trained_run, toy_fashion_session,
                                                                           tmp_path, capsys):
    plot = tmp_path / "confusion.png"
    assert main(["evaluate", str(trained_run), "--data-dir", str(toy_fashion_session), "--no-download",
                 "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    history = json.loads((trained_run / "history.json").read_text())
    assert lines[-1] == f"test accuracy {history['test_acc']:.4f}; confusion matrix in {plot}"
    table = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    test = load_dataset("fashion-mnist", toy_fashion_session, download=False)
    assert int(table["Trouser"][0]) == int(np.sum(test.y_test == 1))  # examples of class 1
    assert table["all"][:2] == ["100", str(round(history["test_acc"] * 100))]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(plot).size[0] > 500


def test_evaluate_names_a_missing_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "normlab evaluate: error: " in capsys.readouterr().err


def test_predict_prints_the_class_and_probability_of_each_file(trained_run, toy_fashion_session, tmp_path, capsys):
    test = load_dataset("fashion-mnist", toy_fashion_session, download=False)
    np.save(tmp_path / "one.npy", test.x_test[0, 0])  # (28, 28)
    np.save(tmp_path / "three.npy", test.x_test[:3])  # (3, 1, 28, 28)
    Image.fromarray(test.x_test[1, 0]).save(tmp_path / "two.png")
    files = [tmp_path / "one.npy", tmp_path / "three.npy", tmp_path / "two.png"]
    assert main(["predict", str(trained_run), *map(str, files), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(files[0]), *(f"{files[1]}[{i}]" for i in range(3)),
                                                       str(files[2])]
    from normlab.train import load_run

    run = load_run(trained_run)
    p = run.predict_proba(test.x_test[:3])
    for line, k in zip(lines[1:4], range(3)):
        best = np.argsort(-p[k])[:2]
        assert line.split(": ", 1)[1] == f"{run.classes[best[0]]} {p[k, best[0]]:.4f}, {run.classes[best[1]]} " \
                                         f"{p[k, best[1]]:.4f}"
    assert lines[0].split(": ")[1] == lines[1].split(": ")[1] and lines[4].split(": ")[1] == lines[2].split(": ")[1]


def test_predict_names_the_file_with_a_wrong_shape_and_prints_nothing_else(trained_run, tmp_path, capsys):
    np.save(tmp_path / "good.npy", np.zeros((28, 28), np.uint8))
    np.save(tmp_path / "cifar.npy", np.zeros((3, 32, 32), np.uint8))
    assert main(["predict", str(trained_run), str(tmp_path / "good.npy"), str(tmp_path / "cifar.npy")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert re.search(r"normlab predict: error: .*cifar.npy: expected one image of shape \(1, 28, 28\).* got shape "
                     r"\(3, 32, 32\)", err)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("fmt, fold", [("onnx", False), ("onnx", True), ("torch", False), ("torch", True),
                                       ("keras", False)])
def test_export_writes_a_file_its_runtime_runs_like_normlab(trained_run, toy_fashion_session, tmp_path, capsys,
                                                           fmt, fold):
    require("torch", "torch")
    if fmt == "onnx":
        require("onnxruntime", "onnx")
        require("onnxscript", "onnx")
    if fmt == "keras":
        require("keras", "tensorflow")
    out = tmp_path / f"model.{fmt}"
    args = ["export", str(trained_run), "--format", fmt, "--out", str(out), "--check", "50",
            "--data-dir", str(toy_fashion_session), "--no-download"] + (["--fold"] if fold else [])
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out}")
    found = re.fullmatch(r"checked with \S+ on 50 fashion-mnist test images: max \|scores - normlab's\| = (\S+) "
                         r"\(largest score \S+\); the same class for 50/50", lines[-1])
    assert found and float(found.group(1)) < 1e-4
    if fmt in ("onnx", "torch"):
        from normlab.interop.export import read_metadata

        metadata = read_metadata(out, fmt)
        assert metadata["classes"][9] == "Ankle boot" and len(metadata["standardizer_mean"]) == 1
        assert metadata["folded"] == fold
    if fmt == "torch":
        import torch

        ops = {str(node.target) for node in torch.export.load(str(out)).graph.nodes if node.op == "call_function"}
        assert any("batch_norm" in op for op in ops) != fold  # folded: no batch norm left in the program


def test_export_results_agree_with_load_run_on_raw_images(trained_run, toy_fashion_session, tmp_path):
    ort = require("onnxruntime", "onnx")
    require("onnxscript", "onnx")
    from normlab.train import load_run

    out = tmp_path / "m.onnx"
    assert main(["export", str(trained_run), "--format", "onnx", "--out", str(out), "--check", "0"]) == 0
    run = load_run(trained_run)
    images = load_dataset("fashion-mnist", toy_fashion_session, download=False).x_test
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": run.preprocess(images)})[0]
    assert np.array_equal(logits.argmax(axis=1), run.predict(images))


def test_export_refuses_an_unknown_format(trained_run, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(trained_run), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, expected", [
    ("--tolerance", "nan", "expected a finite number, got 'nan'"),
    ("--tolerance", "-1", "expected a number >= 0, got '-1'"),
    ("--check", "-5", "expected a number >= 0, got '-5'"),
])
def test_export_refuses_bad_numbers_naming_the_option(tmp_path, capsys, option, value, expected):
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path), "--format", "onnx", option, value])
    assert f"argument {option}: {expected}" in capsys.readouterr().err
