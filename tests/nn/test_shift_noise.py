"""DistributionShiftNoise (noisy batch norm): the documented distribution of its scale and offset over many
draws, its change from step to step, seeded reproducibility, the identity in evaluation, the backward."""

import copy

import numpy as np
import pytest

from normlab.gradcheck import numerical_gradient, relative_error
from normlab.nn import DistributionShiftNoise

STEPS, BATCH, FEATURES = 2000, 16, 8


def draws(noise, steps=STEPS, shape=(BATCH, FEATURES)):
    """The scale and offset of `steps` forward calls, (T, N, F) each, read off the outputs for x = 0 (b) and,
    with the same generator state, x = 1 (a + b)."""
    a, b = [], []
    for _ in range(steps):
        twin = copy.deepcopy(noise.rng)
        offset = noise.forward(np.zeros(shape))
        noise.rng = twin
        a.append(noise.forward(np.ones(shape)) - offset)
        b.append(offset)
    return np.array(a), np.array(b)


def test_scale_and_offset_have_the_documented_mean_and_variance_over_many_draws():
    s, m, sd = 0.6, 1.5, 0.2
    a, b = draws(DistributionShiftNoise(s, m, sd, rng=np.random.default_rng(0)))
    # Over steps: E[a] = 1, Var[a] = s^2/3 + sd^2, E[b] = 0, Var[b] = m^2/3 + sd^2. The per-step part is shared
    # by a batch, so the standard error is set by the T * F independent step draws.
    n = STEPS * FEATURES
    assert abs(a.mean() - 1) < 5 * np.sqrt((s**2 / 3 + sd**2) / n)
    assert abs(b.mean()) < 5 * np.sqrt((m**2 / 3 + sd**2) / n)
    np.testing.assert_allclose(a.var(), s**2 / 3 + sd**2, rtol=0.05)
    np.testing.assert_allclose(b.var(), m**2 / 3 + sd**2, rtol=0.05)
    # Within a step, around the step's mean: the per-element jitter sd.
    np.testing.assert_allclose(a.std(axis=1, ddof=1).mean(), sd, rtol=0.05)
    np.testing.assert_allclose(b.std(axis=1, ddof=1).mean(), sd, rtol=0.05)


def test_the_distribution_changes_at_every_step_within_its_documented_ranges():
    s, m = 0.5, 1.0
    a, b = draws(DistributionShiftNoise(s, m, 0.0, rng=np.random.default_rng(1)), steps=500)
    alpha, mu = a[:, 0, :], b[:, 0, :]  # (T, F): without jitter every example of a step shares them
    np.testing.assert_array_equal(a, np.broadcast_to(alpha[:, None], a.shape))
    assert alpha.min() >= 1 - s and alpha.max() <= 1 + s and np.abs(mu).max() <= m
    # Uniform: the extremes come close to the ends, and the step means differ from step to step and by unit.
    assert alpha.min() < 1 - 0.95 * s and alpha.max() > 1 + 0.95 * s and np.abs(mu).max() > 0.95 * m
    assert np.all(np.diff(alpha, axis=0) != 0) and np.all(np.diff(mu, axis=1) != 0)
    np.testing.assert_allclose(alpha.var(), s**2 / 3, rtol=0.1)
    np.testing.assert_allclose(mu.var(), m**2 / 3, rtol=0.1)


def test_the_noise_shifts_a_normalized_input_to_a_nonzero_mean_and_nonunit_variance():
    x = np.random.default_rng(2).standard_normal((4096, 4))
    x = (x - x.mean(0)) / x.std(0)  # what batch norm hands on (gamma 1, beta 0)
    noise = DistributionShiftNoise(0.75, 1.0, 0.1, rng=np.random.default_rng(3))
    twin = copy.deepcopy(noise.rng)
    y = noise.forward(x)
    alpha = twin.uniform(0.25, 1.75, size=(1, 4))
    mu = twin.uniform(-1.0, 1.0, size=(1, 4))
    np.testing.assert_allclose(y.mean(0), mu[0], atol=0.02)
    np.testing.assert_allclose(y.std(0), np.sqrt(alpha[0] ** 2 + 0.1**2 * 2), rtol=0.05)


def test_channels_share_the_step_draw_over_positions():
    noise = DistributionShiftNoise(0.5, 1.0, 0.0, rng=np.random.default_rng(4))
    y = noise.forward(np.zeros((2, 3, 4, 5)))  # (N, C, H, W): y = mu_c
    np.testing.assert_array_equal(y, np.broadcast_to(y[:1, :, :1, :1], y.shape))
    assert len(set(y[0, :, 0, 0])) == 3


def test_a_seed_reproduces_the_noise_and_another_seed_does_not():
    x = np.random.default_rng(5).standard_normal((8, 6)).astype(np.float32)
    modules = [DistributionShiftNoise(rng=np.random.default_rng(seed)) for seed in (7, 7, 8)]
    runs = [[noise.forward(x) for _ in range(3)] for noise in modules]
    for first, again in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(first, again)
        assert first.dtype == np.float32
    assert not np.allclose(runs[0][0], runs[2][0])
    assert not np.allclose(runs[0][0], runs[0][1])  # and it changes from call to call


def test_evaluation_mode_is_the_identity_and_draws_nothing():
    noise = DistributionShiftNoise(rng=np.random.default_rng(9)).eval()
    state = copy.deepcopy(noise.rng.bit_generator.state)
    x = np.random.default_rng(10).standard_normal((5, 3))
    assert noise.forward(x) is x
    dout = np.ones_like(x)
    assert noise.backward(dout) is dout
    assert noise.rng.bit_generator.state == state


def test_backward_is_the_drawn_scale_and_matches_numerical_gradients():
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    noise = DistributionShiftNoise(rng=np.random.default_rng(12))
    state = copy.deepcopy(noise.rng.bit_generator.state)

    def f(v):  # the same draw at every evaluation: the noise of one step
        noise.rng.bit_generator.state = state
        return noise.forward(v)

    numerical = numerical_gradient(f, x.copy(), dout)
    f(x)
    assert relative_error(noise.backward(dout), numerical) < 1e-9


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"scale_spread must be in \[0, 1\).*got 1.0"):
        DistributionShiftNoise(scale_spread=1.0)
    with pytest.raises(ValueError, match="shift_spread must be >= 0, got -0.5"):
        DistributionShiftNoise(shift_spread=-0.5)
    with pytest.raises(ValueError, match="sample_std must be >= 0, got nan"):
        DistributionShiftNoise(sample_std=float("nan"))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator or None, got int"):
        DistributionShiftNoise(rng=3)
    noise = DistributionShiftNoise(rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"a batch axis and a feature axis \(N, F, ...\), got shape \(5,\)"):
        noise.forward(np.zeros(5))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        DistributionShiftNoise().backward(np.zeros((2, 2)))
