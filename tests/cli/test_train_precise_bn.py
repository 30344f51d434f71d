"""`normlab train --precise-bn K`: after training, the best model's batch norm statistics are recomputed from K
training batches and saved, before the test evaluation; the option is in config.json, checked before
training, and cannot be changed on resume."""

import json
import re

import numpy as np
import pytest

from normlab.cli import main
from normlab.nn import recompute_batchnorm_statistics
from normlab.train import load_tensors
from normlab.train.config import TrainConfig
from normlab.train.run import precise_batchnorm, prepare_data, run_seeds
from normlab.train.saved_run import load_run


def train(*args):
    return main(["train", "--no-progress", "--no-download", *map(str, args)])


def test_precise_bn_saves_the_statistics_of_k_training_batches(toy_fashion, tmp_path, capsys):
    out, plain = tmp_path / "precise", tmp_path / "plain"
    common = ["--data-dir", toy_fashion, "--epochs", 2, "--hidden", 16, "--batch-size", 32]
    assert train(*common, "--precise-bn", 3, "--out", out) == 0
    assert "batch norm statistics recomputed from 3 training batches of 32 (96 examples; --precise-bn)" in \
        capsys.readouterr().out
    assert train(*common, "--out", plain) == 0
    config = TrainConfig.load(out / "config.json")
    assert config.precise_bn == 3 and TrainConfig.load(plain / "config.json").precise_bn == 0
    precise, meta = load_tensors(out / "model.safetensors")
    running, _ = load_tensors(plain / "model.safetensors")
    assert meta["precise_bn_samples"] == 96
    for name in precise:  # the same training; only the statistics differ
        same = np.array_equal(precise[name], running[name])
        assert same == (not name.endswith(("running_mean", "running_var"))), name

    # The saved statistics are those of the K batches: recomputing them again from the loaded model (its
    # weights are the ones the statistics came from) gives them back.
    model = load_run(out).model
    data = prepare_data(config, np.random.default_rng(run_seeds(config)[0]), toy_fashion, download=False)
    assert precise_batchnorm(model, data.x_train, config) == 96
    state = model.state_dict()
    for name in ("2.running_mean", "2.running_var"):
        np.testing.assert_allclose(state[name], precise[name], rtol=2e-7, err_msg=name)
    # ... and differ from those of other batches
    recompute_batchnorm_statistics(model, [data.x_train[:96]])
    assert not np.allclose(model.state_dict()["2.running_mean"], precise["2.running_mean"], rtol=1e-3)

    # The test accuracy was measured with them: `normlab evaluate` reads the same file.
    history = json.loads((out / "history.json").read_text())
    assert main(["evaluate", str(out), "--data-dir", str(toy_fashion), "--no-download"]) == 0
    assert f"{history['test_acc']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize(("options", "message"), [
    (["--normalization", "none", "--precise-bn", 2], "--precise-bn 2: model 'fcnet' .* has no batch norm"),
    (["--precise-bn", 20, "--batch-size", 32], ("--precise-bn 20: 20 batches of 32 need 640 training examples, "
                                                "the training split has 360")),
])
def test_precise_bn_that_cannot_be_done_is_refused_before_training(toy_fashion, tmp_path, capsys, options, message):
    assert train("--data-dir", toy_fashion, "--epochs", 1, "--hidden", 8, *options, "--out", tmp_path / "r") == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "r" / "config.json").exists()


def test_a_negative_precise_bn_is_an_argument_error(capsys):
    with pytest.raises(SystemExit):
        train("--precise-bn", -1)
    assert "--precise-bn" in capsys.readouterr().err


def test_precise_bn_cannot_be_changed_on_resume(tmp_path, capsys):
    (tmp_path / "config.json").write_text(TrainConfig().to_json())
    assert train("--resume", tmp_path, "--precise-bn", 5) == 2
    assert "do not combine it with --precise-bn" in capsys.readouterr().err
