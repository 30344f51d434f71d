"""normlab.checks: one rule for sizes and counts (bools and floats refused, NumPy integers taken), one for
rates and one for generators, each message naming the argument, the expected and the actual; and the
layers that take sizes apply the same rule."""

import numpy as np
import pytest

from normlab import nn
from normlab.autograd.graphs import groupnorm_graph
from normlab.checks import (
    check_non_negative_int,
    check_positive,
    check_positive_int,
    check_probability,
    resolve_rng,
)
from normlab.data.loader import batch_indices
from normlab.optim.schedules import Cosine, StepDecay


@pytest.mark.parametrize("value, message", [
    (True, r"size must be a positive integer, got True \(bool\)"),
    (np.bool_(True), r"size must be a positive integer, got np.True_ \(bool"),
    (2.0, r"size must be a positive integer, got 2.0 \(float\)"),
    (np.float64(3), r"size must be a positive integer, got np.float64\(3.0\) \(float64\)"),
    ("3", r"size must be a positive integer, got '3' \(str\)"),
    (None, r"size must be a positive integer, got None \(NoneType\)"),
    (0, r"size must be a positive integer, got 0$"),
    (-4, r"size must be a positive integer, got -4$"),
    (np.int8(-1), r"size must be a positive integer, got np.int8\(-1\)$"),
])
def test_check_positive_int_refuses_with_the_name_the_expected_and_the_actual(value, message):
    with pytest.raises(ValueError, match=message):
        check_positive_int("size", value)


@pytest.mark.parametrize("value", [1, 7, np.int64(7), np.uint8(3), np.int32(1)])
def test_check_positive_int_takes_python_and_numpy_integers_and_returns_a_python_int(value):
    out = check_positive_int("size", value)
    assert out == value and type(out) is int


def test_check_positive_int_says_what_the_integer_counts():
    with pytest.raises(ValueError, match=r"^n must be a positive integer number of threads, got 0$"):
        check_positive_int("n", 0, what="number of threads")


def test_check_non_negative_int_takes_zero_and_refuses_negatives_and_bools():
    assert check_non_negative_int("seed", 0) == 0 and check_non_negative_int("seed", np.int64(5)) == 5
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer, got -1$"):
        check_non_negative_int("seed", -1)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer, got False \(bool\)"):
        check_non_negative_int("seed", False)


def test_rates_refuse_bools_as_they_refuse_other_non_numbers():
    with pytest.raises(TypeError, match="eps must be a number > 0, got bool"):
        check_positive("eps", True)
    with pytest.raises(TypeError, match="momentum must be a number in \\[0, 1\\], got bool"):
        check_probability("momentum", False)
    assert check_positive("eps", np.float32(1e-5)) == np.float32(1e-5)
    assert check_probability("momentum", 1) == 1


def test_resolve_rng_gives_the_generator_a_fresh_one_or_a_clear_error():
    rng = np.random.default_rng(0)
    assert resolve_rng(rng) is rng
    fresh = resolve_rng(None)
    assert isinstance(fresh, np.random.Generator) and fresh is not resolve_rng(None)
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator or None, got int \(for a seed s, "
                                        r"pass numpy.random.default_rng\(s\)\)"):
        resolve_rng(0)
    with pytest.raises(TypeError, match="init_rng must be a numpy.random.Generator or None, got RandomState"):
        resolve_rng(np.random.RandomState(0), "init_rng")


# Every place that takes a size applies the one rule: a bool is refused (nn.Linear once took True as 1),
# a NumPy integer is taken.
SIZE_ARGUMENTS = [
    ("in_features", lambda v: nn.Linear(v, 3)),
    ("out_features", lambda v: nn.Linear(3, v)),
    ("in_channels", lambda v: nn.Conv2d(v, 2, 3)),
    ("groups", lambda v: nn.Conv2d(2, 2, 3, groups=v)),
    ("num_features", lambda v: nn.BatchNorm1d(v)),
    ("num_features", lambda v: nn.InstanceNorm2d(v)),
    ("normalized_shape", lambda v: nn.LayerNorm(v)),
    ("normalized_shape", lambda v: nn.LayerNorm((3, v))),
    ("num_groups", lambda v: nn.GroupNorm(v, 2)),
    ("num_channels", lambda v: nn.GroupNorm(1, v)),
    ("virtual_batch_size", lambda v: nn.GhostBatchNorm1d(2, v)),
    ("num_features", lambda v: nn.SyncBatchNorm(v)),
    ("batch_size", lambda v: list(batch_indices(np.arange(4), v))),
    ("step_size", lambda v: StepDecay(v)),
    ("total_steps", lambda v: Cosine(v)),
    ("num_groups", lambda v: groupnorm_graph(np.ones((2, 2, 3)), np.ones(2), np.zeros(2), v)),
]


@pytest.mark.parametrize("name, build", SIZE_ARGUMENTS)
@pytest.mark.parametrize("bad", [True, 2.0, 0])
def test_every_size_argument_refuses_bools_floats_and_zero_naming_itself(name, build, bad):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        build(bad)


@pytest.mark.parametrize("name, build", SIZE_ARGUMENTS)
def test_every_size_argument_takes_a_numpy_integer(name, build):
    build(np.int64(1))
