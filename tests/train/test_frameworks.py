"""`normlab train --framework torch|tensorflow`: the same run (data, order, initial weights,
hyperparameters) with the step in the model's twin; run files under normlab's names."""

import json
import os

import numpy as np
import pytest

from normlab.models import build_model
from normlab.train import load_tensors
from normlab.train.config import TrainConfig
from normlab.train.run import run_training

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _run(toy, tmp_path, framework, max_steps=None, **options):
    fields = dict(model="fcnet", model_options={"hidden_dims": (16,)}, optimizer="sgd", lr=0.05, momentum=0.9,
                  schedule="constant", epochs=1, batch_size=32, limit=300, framework=framework)
    fields.update(options)
    config = TrainConfig(**fields)
    return run_training(config, tmp_path / framework, data_dir=toy, download=False, progress=False,
                        log=lambda _: None, max_steps=max_steps)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_each_framework_writes_the_run_files_under_normlab_names(toy_fashion, tmp_path, framework):
    pytest.importorskip(framework)
    result = _run(toy_fashion, tmp_path, framework)
    assert result.status == "completed" and result.test_acc is not None
    assert {"config.json", "history.json", "model.safetensors", "checkpoint.safetensors"} <= {
        p.name for p in result.run_dir.iterdir()}
    history = json.loads((result.run_dir / "history.json").read_text())
    assert len(history["loss"]) == 9 and history["loss"][-1] < history["loss"][0]  # 270 examples / 32
    assert json.loads((result.run_dir / "config.json").read_text())["framework"] == framework
    weights, _ = load_tensors(result.run_dir / "model.safetensors")
    fresh = build_model("fcnet", input_shape=(1, 28, 28), num_classes=10, rng=np.random.default_rng(0),
                        hidden_dims=(16,))
    assert sorted(weights) == sorted(fresh.state_dict())  # loads into the normlab model by name
    counts = [int(v) for k, v in weights.items() if k.endswith("num_batches_tracked")]
    assert counts and all(c == 9 for c in counts)  # Keras keeps no count: advanced by the steps taken


@pytest.mark.parametrize("optimizer, options", [
    ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    ("adam", {"lr": 1e-3, "weight_decay": 1e-2}), ("adamw", {"lr": 1e-3, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 1e-3, "weight_decay": 1e-2})])
def test_torch_steps_follow_the_numpy_run(toy_fashion, tmp_path, optimizer, options):
    """Same init and batches: the torch run's losses over 5 steps are the NumPy run's to float32 rounding."""
    pytest.importorskip("torch")
    ours = _run(toy_fashion, tmp_path / "n", "numpy", max_steps=5, optimizer=optimizer, **options).history.loss
    theirs = _run(toy_fashion, tmp_path / "t", "torch", max_steps=5, optimizer=optimizer, **options).history.loss
    assert len(ours) == len(theirs) == 5
    np.testing.assert_allclose(theirs, ours, rtol=2e-5)


def test_torch_cnn_run_follows_the_numpy_run(toy_fashion, tmp_path):
    pytest.importorskip("torch")
    options = dict(model="bn-cnn", model_options={}, max_steps=3, batch_size=16, limit=100)
    ours = _run(toy_fashion, tmp_path / "n", "numpy", **options)
    theirs = _run(toy_fashion, tmp_path / "t", "torch", **options)
    np.testing.assert_allclose(theirs.history.loss, ours.history.loss, rtol=2e-5)
    a, _ = load_tensors(ours.run_dir / "checkpoint.safetensors")
    b, _ = load_tensors(theirs.run_dir / "checkpoint.safetensors")
    # float32 rounding, grown by 3 steps of momentum SGD through batch norm (betas start at 0, so an
    # absolute floor): differences ~1e-4 where the weights are ~1
    for name in a:
        if name.startswith("model."):
            np.testing.assert_allclose(b[name], a[name], rtol=1e-3, atol=3e-4, err_msg=name)


def test_unknown_framework_is_refused():
    with pytest.raises(ValueError, match=r"framework must be one of .*'torch'.*got 'jax'"):
        TrainConfig(framework="jax")


def test_torch_run_resumes_to_the_uninterrupted_result(toy_fashion, tmp_path):
    """The checkpoint holds the torch optimizer's state (momentum buffers) and the pulled-back weights."""
    pytest.importorskip("torch")
    options = dict(optimizer="adam", lr=1e-3, schedule="cosine")
    whole = _run(toy_fashion, tmp_path / "whole", "torch", **options)
    paused = _run(toy_fashion, tmp_path / "parts", "torch", max_steps=4, **options)
    assert paused.status == "paused"
    config = TrainConfig(model="fcnet", model_options={"hidden_dims": (16,)}, momentum=0.9, epochs=1, batch_size=32,
                         limit=300, framework="torch", **options)
    resumed = run_training(config, paused.run_dir, resume=True, data_dir=toy_fashion, download=False,
                           progress=False, log=lambda _: None)
    assert resumed.history.loss == whole.history.loss
    a, _ = load_tensors(whole.run_dir / "model.safetensors")
    b, _ = load_tensors(resumed.run_dir / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
