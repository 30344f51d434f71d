"""The one vocabulary of normalization names (normlab.nn.norm_registry): every name builds its layer for
(N, D) features and (N, C, H, W) maps with its options, the group-count default is Wu & He's, and a wrong
name or option is an error that lists what is valid."""

import numpy as np
import pytest

from normlab import nn
from normlab.nn.norm_registry import MAX_GROUPS, NormOption

FEATURES = {"none": nn.Identity, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm, "group": nn.GroupNorm,
            "renorm": nn.BatchRenorm1d, "ghost": nn.GhostBatchNorm1d}
MAPS = {"none": nn.Identity, "batch": nn.BatchNorm2d, "layer": nn.GroupNorm, "group": nn.GroupNorm,
        "instance": nn.InstanceNorm2d, "renorm": nn.BatchRenorm2d, "ghost": nn.GhostBatchNorm2d}


def test_the_vocabulary_is_every_normalization_and_nn_exports_it():
    assert nn.normalization_names() == ("none", "batch", "layer", "group", "instance", "renorm", "ghost")
    assert set(nn.NORMALIZATIONS_2D) == set(nn.normalization_names()) == set(MAPS)
    assert nn.PLACEMENTS == ("before", "after")


@pytest.mark.parametrize("name", list(FEATURES))
def test_each_name_builds_its_layer_for_features(name):
    layer = nn.build_norm(name, 64, dtype=np.float64)
    assert type(layer) is FEATURES[name]
    x = np.random.default_rng(0).standard_normal((20, 64))
    out = layer(x)
    assert out.shape == x.shape and out.dtype == np.float64
    if name != "none":  # normalized: every sample (layer, group) or feature (batch kinds) has mean 0
        axis = 1 if name in ("layer", "group") else 0
        np.testing.assert_allclose(out.mean(axis=axis), 0, atol=1e-12)


@pytest.mark.parametrize("name", list(MAPS))
def test_each_name_builds_its_layer_for_maps(name):
    layer = nn.build_norm(name, 12, spatial=True)
    assert type(layer) is MAPS[name]
    x = np.random.default_rng(1).standard_normal((4, 12, 3, 3)).astype(np.float32)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == np.float32 and layer.backward(out).shape == x.shape
    if name == "layer":
        assert layer.num_groups == 1  # all of (C, H, W) per sample, one affine per channel
    if name == "instance":
        assert layer.affine


@pytest.mark.parametrize("channels, groups", [(512, 32), (256, 32), (64, 32), (32, 32), (100, 25), (24, 24),
                                              (48, 24), (7, 7), (37, 1), (1, 1)])
def test_the_group_count_default_is_the_largest_divisor_up_to_32(channels, groups):
    assert nn.default_groups(channels) == groups
    assert nn.build_norm("group", channels).num_groups == groups
    assert nn.build_norm("group", channels, spatial=True).num_groups == groups
    assert nn.norm2d("group", channels).num_groups == groups
    assert MAX_GROUPS == 32


def test_options_reach_the_layers():
    assert nn.build_norm("group", 64, spatial=True, groups=8).num_groups == 8
    assert nn.build_norm("ghost", 16, virtual_batch_size=4, momentum=0.3).virtual_batch_size == 4
    batch = nn.build_norm("batch", 8, eps=1e-3, momentum=0.5)
    assert (batch.eps, batch.momentum) == (1e-3, 0.5)
    renorm = nn.build_norm("renorm", 8, spatial=True, rmax=2.0, dmax=1.0, warmup_steps=0, rmax_full_at=4,
                           dmax_full_at=2)
    assert renorm.schedule == nn.RenormSchedule(2.0, 1.0, 0, 4, 2) and renorm.momentum == 0.01
    fixed = nn.RenormSchedule.constant(1.5, 0.5)
    assert nn.build_norm("renorm", 8, schedule=fixed).schedule is fixed
    assert nn.build_norm("renorm", 8).schedule == nn.RenormSchedule()  # Ioffe's by default


def test_every_option_has_a_default_type_and_help():
    for name in nn.normalization_names():
        norm = nn.get_normalization(name)
        assert norm.description
        for option in norm.options:
            assert isinstance(option, NormOption) and option.help and isinstance(option.type, type)
        assert set(nn.check_norm_options(name, {}, spatial=True)) == set(norm.defaults)


@pytest.mark.parametrize("call, message", [
    (lambda: nn.build_norm("weight", 4), (r"normalization must be one of \('none', 'batch', 'layer', 'group', "
                                          r"'instance', 'renorm', 'ghost'\), got 'weight'")),
    (lambda: nn.build_norm("batch", 4, groups=2), (r"normalization 'batch' does not take the option 'groups' "
                                                   r"\(it takes eps, momentum\)")),
    (lambda: nn.build_norm("none", 4, eps=1.0, momentum=0.1),
     r"'none' does not take the options 'eps', 'momentum' \(it takes no options\)"),
    (lambda: nn.build_norm("instance", 4), (r"'instance' needs \(N, C, H, W\) maps .* choose one of \('none', "
                                            r"'batch', 'layer', 'group', 'renorm', 'ghost'\)")),
    (lambda: nn.build_norm("group", 12, groups=5), "groups must divide the number of channels, got groups=5 for 12"),
    (lambda: nn.build_norm("group", 12, groups=0), "groups must be a positive integer, got 0"),
    (lambda: nn.build_norm("renorm", 4, warmup_steps=10, rmax_full_at=5),
     "rmax_full_at must be >= warmup_steps=10, got rmax_full_at=5"),
    (lambda: nn.build_norm("ghost", 4, virtual_batch_size=0), "virtual_batch_size must be a positive integer"),
    (lambda: nn.get_normalization(None), "normalization must be one of"),
])
def test_bad_names_and_options_are_errors_that_list_the_valid_ones(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="a normalization named 'batch' is already registered"):
        nn.norm_registry.register_normalization(nn.get_normalization("batch"))
