"""Assigning over a child or a parameter keeps its place: forward order and state dict order stay."""

import numpy as np

from normlab import nn


def test_replacing_a_child_keeps_its_place_in_forward_and_state_dict():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 4, rng=rng), nn.BatchNorm1d(4), nn.Linear(4, 2, rng=rng))
    model.eval()
    setattr(model, "1", nn.Identity())
    assert [type(m).__name__ for m in model] == ["Linear", "Identity", "Linear"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = rng.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x), model[2](model[0](x)))


def test_replacing_a_parameter_keeps_its_place():
    linear = nn.Linear(3, 2, rng=np.random.default_rng(0))
    linear.weight = nn.Parameter(np.zeros((2, 3), np.float32))
    assert list(linear.state_dict()) == ["weight", "bias"]
    linear.bias = None  # no longer a parameter
    assert list(linear.state_dict()) == ["weight"]
