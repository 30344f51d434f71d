"""Every nn module that draws random numbers takes `rng` the same way: keyword-only, optional (a fresh
unseeded generator when omitted, as torch draws from its global one), a seeded generator giving the same
numbers every time, and anything else refused when the module is built."""

import numpy as np
import pytest

from normlab import nn

BUILDERS = {
    "Linear": lambda rng: nn.Linear(5, 3, **rng),
    "Conv2d": lambda rng: nn.Conv2d(2, 4, 3, **rng),
    "ResidualBlock": lambda rng: nn.ResidualBlock(2, 4, stride=2, **rng),
    "Dropout": lambda rng: nn.Dropout(0.5, **rng),
}


def draws(module):
    """What the generator decided: the initial weights, or for Dropout the mask of one forward."""
    if isinstance(module, nn.Dropout):
        return [module.forward(np.ones((4, 8), np.float32))]
    return [p.data for p in module.parameters()]


@pytest.mark.parametrize("name", BUILDERS)
def test_a_seeded_generator_gives_the_same_module_every_time(name):
    first, second = (draws(BUILDERS[name]({"rng": np.random.default_rng(7)})) for _ in range(2))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", BUILDERS)
def test_without_rng_each_module_draws_from_a_fresh_generator(name):
    first, second = draws(BUILDERS[name]({})), draws(BUILDERS[name]({}))
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("bad", [0, np.random.RandomState(0)])
def test_anything_but_a_generator_is_refused_when_the_module_is_built(name, bad):
    with pytest.raises(TypeError, match=f"rng must be a numpy.random.Generator or None, got {type(bad).__name__}"):
        BUILDERS[name]({"rng": bad})


def test_the_seeded_draws_are_torchs_initialization_in_a_fixed_order():
    """Linear: weight then bias, uniform in +-1/sqrt(in_features), from the generator as given."""
    layer = nn.Linear(5, 3, rng=np.random.default_rng(3))
    rng, bound = np.random.default_rng(3), 1 / np.sqrt(5)
    np.testing.assert_array_equal(layer.weight.data, rng.uniform(-bound, bound, (3, 5)).astype(np.float32))
    np.testing.assert_array_equal(layer.bias.data, rng.uniform(-bound, bound, 3).astype(np.float32))


def test_rng_is_keyword_only_everywhere():
    with pytest.raises(TypeError):
        nn.Dropout(0.5, np.random.default_rng())
    with pytest.raises(TypeError):
        nn.Linear(5, 3, True, np.random.default_rng())
