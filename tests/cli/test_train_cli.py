"""`normlab train` end to end, on small synthesized datasets and on a subset of the real Fashion-MNIST."""

import json
import os
import re

import numpy as np
import pytest
from optional import require

from normlab.cli import build_parser, main
from normlab.models import register_model
from normlab.models.registry import available_models
from normlab.nn import Flatten, Linear, Sequential
from normlab.train import load_tensors
from normlab.train.config import TrainConfig
from normlab.train.run import run_training

REAL = "/usr/share/datasets/fashion-mnist"

if "test-linear" not in available_models():
    @register_model("test-linear")
    def build_test_linear(*, input_shape, num_classes, rng):
        """A model that takes no options, and asks for augmentation."""
        return Sequential(Flatten(), Linear(int(np.prod(input_shape)), num_classes, rng=rng))

    build_test_linear.default_augment = True


def train(*args):
    return main(["train", "--no-progress", "--no-download", *map(str, args)])


def test_train_writes_a_run_directory(toy_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--data-dir", toy_fashion, "--epochs", 2, "--hidden", 32, "--batch-size", 32, "--out", out) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert re.fullmatch(r"test accuracy [01]\.\d{4} \(weights of epoch \d, val acc [01]\.\d{4}\) in \d+\.\d s; "
                        r"run saved in (.*run), plot \1/curves\.png", lines[-1])
    assert float(lines[-1].split()[2]) > 0.8
    assert {p.name for p in out.iterdir()} == {"config.json", "preprocessing.json", "history.json", "history.csv",
                                               "iterations.csv", "curves.png", "model.safetensors",
                                               "checkpoint.safetensors"}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["model_options"] == {"hidden_dims": [32]} and config["epochs"] == 2
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2 * 12 and len(history["epochs"]) == 2  # 360 training examples / 32
    assert history["test_acc"] == pytest.approx(float(lines[-1].split()[2]), abs=5e-5)
    arrays, _ = load_tensors(out / "model.safetensors")
    assert arrays["1.weight"].shape == (32, 784) and "2.running_var" in arrays


def test_resume_through_the_cli_is_bit_identical(toy_fashion, tmp_path, capsys):
    args = ["--data-dir", toy_fashion, "--epochs", 3, "--hidden", 24, "16", "--batch-size", 32, "--dropout", 0.1,
            "--augment"]
    assert train(*args, "--out", tmp_path / "whole") == 0
    config = TrainConfig.load(tmp_path / "whole" / "config.json")
    paused = run_training(config, tmp_path / "split", data_dir=toy_fashion, progress=False, log=lambda s: None,
                          max_steps=17)
    assert paused.status == "paused"
    assert train("--resume", tmp_path / "split", "--data-dir", toy_fashion) == 0
    whole, _ = load_tensors(tmp_path / "whole" / "checkpoint.safetensors")
    split, _ = load_tensors(tmp_path / "split" / "checkpoint.safetensors")
    assert sorted(whole) == sorted(split)
    assert all(np.array_equal(whole[k], split[k]) for k in whole)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_exits_with_a_message(toy_fashion, tmp_path, capsys):
    rc = train("--data-dir", toy_fashion, "--epochs", 1, "--normalization", "none", "--optimizer", "sgd",
               "--lr", 1e30, "--out", tmp_path / "run")
    assert rc == 1
    assert re.search(r"loss is (nan|inf) at epoch 1, step 2/3 \(iteration 2\)", capsys.readouterr().err)


def test_defaults_are_a_batch_normalized_fcnet_on_fashion_mnist():
    args = build_parser().parse_args(["train"])
    from normlab.cli.train import config_from_args

    config = config_from_args(args)
    assert (config.dataset, config.model, config.optimizer, config.epochs, config.batch_size) == \
        ("fashion-mnist", "fcnet", "adam", 5, 128)
    assert config.model_options == {} and not config.augment
    import inspect

    from normlab.models import model_builder

    assert inspect.signature(model_builder("fcnet")).parameters["normalization"].default == "batch"


def config_for(*argv):
    from normlab.cli.train import config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_weight_decay_goes_to_the_model_or_to_adamw():
    sgd = config_for("--optimizer", "sgd", "--weight-decay", "1e-3")
    assert sgd.model_options == {"reg": 1e-3} and sgd.weight_decay == 0.0 and sgd.lr == 1e-2
    adamw = config_for("--optimizer", "adamw")
    assert adamw.weight_decay == 1e-2 and "reg" not in adamw.model_options
    # A model without a `reg` option gets the optimizer's decay on its weights instead.
    assert config_for("--model", "test-linear", "--weight-decay", "0.5").weight_decay == 0.5


def test_a_model_asks_for_augmentation_and_the_flag_overrides_it():
    assert config_for("--model", "test-linear").augment is True
    assert config_for("--model", "test-linear", "--no-augment").augment is False
    assert config_for("--augment").augment is True


def test_options_the_model_does_not_take_are_an_error(capsys):
    assert train("--model", "test-linear", "--normalization", "batch") == 2
    assert "model 'test-linear' does not take the option 'normalization'" in capsys.readouterr().err


def test_resume_refuses_other_options_and_non_run_directories(tmp_path, capsys):
    assert train("--resume", tmp_path, "--lr", "0.1", "--epochs", 3) == 2
    assert "do not combine it with --lr --epochs" in capsys.readouterr().err
    assert train("--resume", tmp_path) == 2
    assert "no config.json there" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from normlab.data import sources

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.setitem(sources.SOURCES, "mnist", sources.SOURCES["mnist"].__class__(
        "mnist", sources.SOURCES["mnist"].files, sources.SOURCES["mnist"].downloads, ()))
    assert train("--dataset", "mnist", "--data-dir", tmp_path / "nothing", "--out", tmp_path / "run") == 2
    assert "mnist not found (looked in" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(REAL), reason=f"{REAL} missing (apt install dataset-fashion-mnist)")
def test_real_fashion_mnist_subset_learns(tmp_path, capsys):
    assert train("--data-dir", REAL, "--limit", 2000, "--epochs", 1, "--out", tmp_path / "run") == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(last.split()[2]) > 0.65  # chance is 0.1


@pytest.mark.parametrize("model", ["bn-cnn", "convnet3"])
def test_the_cnns_name_their_options(model, capsys):
    # The CNNs have no L2 `reg`: weight decay goes to the optimizer, not into the builder's keywords.
    config = config_for("--model", model, "--optimizer", "sgd", "--weight-decay", "5e-4")
    assert config.weight_decay == 5e-4 and "reg" not in config.model_options
    assert train("--model", model, "--hidden", "64") == 2
    assert f"model '{model}' does not take the option 'hidden_dims'" in capsys.readouterr().err


def test_the_bn_cnn_takes_a_normalization():
    assert config_for("--model", "bn-cnn", "--normalization", "group").model_options == {"normalization": "group"}


def test_train_prints_the_model_summary_first_and_writes_tensorboard_events(toy_fashion, tmp_path, capsys):
    require("tensorboardX", "tensorboard")
    out = tmp_path / "run"
    assert train("--data-dir", toy_fashion, "--epochs", 1, "--hidden", 16, "--batch-size", 64, "--out", out,
                 "--tensorboard") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "FullyConnectedNet on inputs (1, 1, 28, 28)"
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1"))
    assert lines.index("parameters: 12,762 (0.05 MiB)") < first_epoch
    assert any(re.fullmatch(r"1\s+Linear\s+\(1, 16\)\s+12,560", line) for line in lines)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
