import math

import pytest

from normlab.optim import Constant, Cosine, LinearWarmup, StepDecay


def test_constant():
    assert [Constant()(s) for s in (0, 10, 10**6)] == [1.0, 1.0, 1.0]


def test_step_decay_multiplies_by_gamma_every_step_size_steps():
    s = StepDecay(3, gamma=0.5)
    assert [s(i) for i in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_cosine_goes_from_one_to_final():
    s = Cosine(10, final=0.1)
    assert s(0) == 1.0
    assert s(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(10) == pytest.approx(0.1) and s(20) == pytest.approx(0.1)
    assert s(2) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.2)) / 2)


def test_linear_warmup_ramps_then_follows_the_schedule():
    s = LinearWarmup(4, StepDecay(6, 0.1))
    assert [s(i) for i in range(8)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.1, 0.1])
    assert LinearWarmup(0)(0) == 1.0


@pytest.mark.parametrize("make, message", [
    (lambda: StepDecay(0), "step_size must be a positive integer"),
    (lambda: StepDecay(2, gamma=0), "gamma must be > 0"),
    (lambda: Cosine(0), "total_steps must be a positive integer"),
    (lambda: Cosine(5, final=2), r"final must be in \[0, 1\]"),
    (lambda: LinearWarmup(-1), "warmup_steps must be a non-negative integer"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_to_config_names_the_schedule():
    assert LinearWarmup(2, Cosine(10)).to_config() == {
        "name": "warmup", "warmup_steps": 2, "after": {"name": "cosine", "total_steps": 10, "final": 0.0}}
