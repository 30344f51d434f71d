"""`normlab train --normalization` reaches every name of the vocabulary, with each normalization's options
and the placement; a wrong combination is a one-line error naming the flag; a run's config.json keeps them
and reloads."""

import json

import pytest

from normlab.cli import build_parser, main
from normlab.cli.train import TRAIN_NORM_FLAGS, config_from_args
from normlab.models import build_model
from normlab.nn import (
    BatchNorm1d,
    BatchRenorm1d,
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    GroupNorm,
    InstanceNorm2d,
    ReLU,
    RenormSchedule,
    get_normalization,
    normalization_names,
)
from normlab.train.config import TrainConfig
from normlab.train.saved_run import load_run


def config_for(*argv):
    return config_from_args(build_parser().parse_args(["train", *map(str, argv)]))


def train(*args):
    return main(["train", "--no-progress", "--no-download", *map(str, args)])


def test_every_normalization_is_a_choice_and_every_option_has_a_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "{" + ",".join(normalization_names()) + "}" in text and "--placement {before,after}" in text
    options = {o.name for n in normalization_names() for o in get_normalization(n).options}
    assert options - {"schedule"} == set(TRAIN_NORM_FLAGS)  # a schedule object is for Python callers
    for flag, *_ in TRAIN_NORM_FLAGS.values():
        assert flag in text


@pytest.mark.parametrize("argv, options, layer", [
    (["--normalization", "none"], {"normalization": "none"}, None),
    (["--normalization", "layer", "--norm-eps", "1e-3"], {"normalization": "layer", "norm_options": {"eps": 1e-3}},
     None),
    (["--normalization", "group", "--groups", 8], {"normalization": "group", "norm_options": {"groups": 8}},
     (GroupNorm, "num_groups", 8)),
    (["--normalization", "ghost", "--virtual-batch-size", 32],
     {"normalization": "ghost", "norm_options": {"virtual_batch_size": 32}},
     (GhostBatchNorm1d, "virtual_batch_size", 32)),
    (["--normalization", "renorm", "--rmax", 2, "--dmax", 1, "--renorm-warmup", 10, "--rmax-full-at", 100,
      "--dmax-full-at", 50], {"normalization": "renorm", "norm_options": {"rmax": 2.0, "dmax": 1.0, "warmup_steps": 10,
                                                                          "rmax_full_at": 100, "dmax_full_at": 50}},
     (BatchRenorm1d, "schedule", RenormSchedule(2.0, 1.0, 10, 100, 50))),
    (["--norm-momentum", 0.3], {"norm_options": {"momentum": 0.3}}, (BatchNorm1d, "momentum", 0.3)),
    (["--model", "bn-cnn", "--normalization", "instance"], {"normalization": "instance"},
     (InstanceNorm2d, "affine", True)),
    (["--model", "bn-cnn", "--normalization", "ghost", "--virtual-batch-size", 4],
     {"normalization": "ghost", "norm_options": {"virtual_batch_size": 4}},
     (GhostBatchNorm2d, "virtual_batch_size", 4)),
])
def test_flags_become_model_options_that_build_the_layer(argv, options, layer):
    config = config_for(*argv)
    assert config.model_options == options
    if layer is not None:
        kind, attribute, value = layer
        model = build_model(config.model, input_shape=(1, 8, 8), num_classes=3, **config.model_options)
        found = [m for m in model.modules() if type(m) is kind]
        assert found and all(getattr(m, attribute) == value for m in found)


def test_placement_after_reaches_the_fully_connected_network():
    config = config_for("--placement", "after", "--hidden", 6)
    assert config.model_options == {"hidden_dims": (6,), "placement": "after"}
    model = build_model("fcnet", input_shape=(4,), num_classes=2, **config.model_options)
    assert [type(m) for m in model][2:4] == [ReLU, BatchNorm1d]


@pytest.mark.parametrize("argv, message", [
    (["--groups", 8], ("--groups: not an option of --normalization batch (model 'fcnet''s default) (it takes "
                       "--norm-eps, --norm-momentum)")),
    (["--normalization", "layer", "--virtual-batch-size", 4, "--rmax", 2],
     "--virtual-batch-size --rmax: not an option of --normalization layer (it takes --norm-eps)"),
    (["--normalization", "none", "--norm-eps", 0.1],
     "--norm-eps: not an option of --normalization none (it takes none)"),
    (["--model", "convnet3", "--groups", 4], "--groups: model 'convnet3' has no normalization to take it"),
    (["--model", "convnet3", "--placement", "after"], "model 'convnet3' does not take the option 'placement'"),
    (["--model", "bn-cnn", "--placement", "after"], "model 'bn-cnn' does not take the option 'placement'"),
    (["--normalization", "instance"], "normalization 'instance' needs (N, C, H, W) maps"),
    (["--normalization", "renorm", "--renorm-warmup", 100, "--rmax-full-at", 50],
     "--rmax-full-at must be >= --renorm-warmup=100, got --rmax-full-at=50"),
])
def test_wrong_combinations_are_one_line_errors_naming_the_flag(argv, message, capsys):
    assert train(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err == f"normlab train: error: {err.split('error: ', 1)[1]}"
    assert message in err


@pytest.mark.parametrize("option, value, expected", [
    ("--groups", "0", "expected a number >= 1, got '0'"),
    ("--virtual-batch-size", "2.5", "expected an integer, got '2.5'"),
    ("--rmax", "0.5", "expected a number >= 1, got '0.5'"),
    ("--norm-momentum", "0", "expected a number > 0 and <= 1, got '0'"),
    ("--norm-eps", "0", "expected a number > 0, got '0'"),
    ("--normalization", "weight", ("invalid choice: 'weight' (choose from 'none', 'batch', 'layer', 'group', "
                                   "'instance', 'renorm', 'ghost')")),
    ("--placement", "inside", "invalid choice: 'inside' (choose from 'before', 'after')"),
])
def test_bad_values_name_the_flag(option, value, expected, capsys):
    with pytest.raises(SystemExit):
        train(option, value)
    assert f"argument {option}: {expected}" in capsys.readouterr().err


def test_a_run_with_normalization_options_reloads(toy_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--data-dir", toy_fashion, "--epochs", 1, "--hidden", 16, "--batch-size", 40, "--normalization",
                 "ghost", "--virtual-batch-size", 8, "--placement", "after", "--out", out) == 0
    saved = json.loads((out / "config.json").read_text())["model_options"]
    assert saved == {"hidden_dims": [16], "normalization": "ghost", "norm_options": {"virtual_batch_size": 8},
                     "placement": "after"}
    assert TrainConfig.load(out / "config.json").model_options["norm_options"] == {"virtual_batch_size": 8}
    model = load_run(out).model
    ghost = [m for m in model.modules() if isinstance(m, GhostBatchNorm1d)]
    assert len(ghost) == 1 and ghost[0].virtual_batch_size == 8 and isinstance(model[2], ReLU)
    assert train("--resume", out, "--groups", 4) == 2
    assert "do not combine it with --groups" in capsys.readouterr().err


@pytest.mark.parametrize("model_options, message", [
    ({"normalization": "spectral"}, "normalization must be one of"),
    ({"normalization": "batch", "norm_options": {"groups": 2}}, "normalization 'batch' does not take the option"),
    ({"placement": "middle"}, "placement must be one of ('before', 'after')"),
    ({"norm_options": [1]}, "norm_options must be a dict"),
])
def test_a_damaged_config_names_the_file_and_the_normalization(model_options, message, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_options": model_options}))
    with pytest.raises(ValueError, match=r"config\.json: ") as info:
        TrainConfig.load(path)
    assert message in str(info.value)
