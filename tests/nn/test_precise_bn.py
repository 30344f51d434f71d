"""recompute_batchnorm_statistics: every batch norm's running statistics become the mean and unbiased variance
of its inputs over the concatenated batches (float64 rounding), its inputs being those of training-mode
forwards; nothing else about the model changes; bad input is refused with the model left as it was."""

import copy

import numpy as np
import pytest

from normlab import nn
from normlab.nn.normalization import _BatchNorm

RTOL = 1e-12  # float64 rounding; a float32 buffer holds the value rounded to float32


def fc_model(rng, dtype=np.float32):
    """Three kinds of batch norm over (N, D): plain (momentum None), ghost (virtual batches of 4) and renorm
    with fixed bounds, so that its r and d (measured against the running statistics) change its output."""
    return nn.Sequential(
        nn.Linear(6, 8, rng=rng, dtype=dtype), nn.BatchNorm1d(8, momentum=None, dtype=dtype), nn.ReLU(),
        nn.Linear(8, 5, rng=rng, dtype=dtype), nn.GhostBatchNorm1d(5, 4, dtype=dtype), nn.Tanh(),
        nn.Linear(5, 4, rng=rng, dtype=dtype),
        nn.BatchRenorm1d(4, schedule=nn.RenormSchedule.constant(1.5, 0.5), dtype=dtype),
        nn.Linear(4, 3, rng=rng, dtype=dtype))


def conv_model(rng, dtype=np.float64):
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype), nn.ReLU(),
        nn.Conv2d(4, 3, 3, rng=rng, dtype=dtype), nn.BatchNorm2d(3, momentum=0.5, dtype=dtype), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 3 * 3, 2, rng=rng, dtype=dtype))


def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def with_moved_statistics(model, rng):
    """The model with running statistics unlike the data's (as a lagging estimate leaves them)."""
    for m in batch_norms(model):
        m.running_mean[...] = rng.standard_normal(m.num_features)
        m.running_var[...] = rng.uniform(0.5, 2.0, m.num_features)
        m.num_batches_tracked[...] = 7
    return model


def reference_statistics(model, batches):
    """Per batch norm, (mean, unbiased var) in float64 of its inputs over the concatenated batches, each
    input produced by a training-mode forward of a copy of the model, layer by layer."""
    model = copy.deepcopy(model).train()
    for m in batch_norms(model):
        m.momentum = 0.0  # keeps the running statistics (which batch renorm's r and d read) as they were
    inputs = {id(m): [] for m in batch_norms(model)}
    for x in batches:
        for layer in model.children():
            if isinstance(layer, _BatchNorm):
                inputs[id(layer)].append(x.astype(np.float64))
            x = layer.forward(x)
    stats = []
    for m in batch_norms(model):
        everything = np.concatenate(inputs[id(m)])  # (sum N, C, *)
        axes = (0, *range(2, everything.ndim))
        stats.append((everything.mean(axis=axes), everything.var(axis=axes, ddof=1)))
    return stats


def assert_statistics(model, expected):
    for m, (mean, var) in zip(batch_norms(model), expected, strict=True):
        rtol = RTOL if m.running_mean.dtype == np.float64 else np.finfo(m.running_mean.dtype).eps / 2
        np.testing.assert_allclose(m.running_mean, mean, rtol=rtol, atol=0)
        np.testing.assert_allclose(m.running_var, var, rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fully_connected_statistics_equal_those_of_the_concatenated_batches(rng, dtype):
    model = with_moved_statistics(fc_model(rng, dtype), rng)
    # Unequal sizes and batch means far apart: an average of per-batch variances would miss their spread.
    batches = [(rng.standard_normal((n, 6)) * s + shift).astype(dtype)
               for n, s, shift in [(10, 1.0, 3.0), (16, 2.0, -1.0), (6, 0.5, 8.0), (30, 1.5, 0.0)]]
    expected = reference_statistics(model, batches)
    model.eval()
    assert nn.recompute_batchnorm_statistics(model, iter(batches)) == 62
    assert_statistics(model, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_convolutional_statistics_are_over_samples_and_pixels(rng, dtype):
    model = with_moved_statistics(conv_model(rng, dtype), rng)
    batches = [(rng.standard_normal((n, 2, 5, 5)) + shift).astype(dtype)
               for n, shift in [(3, 10.0), (8, -2.0), (1, 0.0), (5, 4.0)]]
    expected = reference_statistics(model, batches)
    nn.recompute_batchnorm_statistics(model, [(x, np.zeros(len(x), np.int64)) for x in batches])  # (x, y) pairs
    assert_statistics(model, expected)


def test_the_variance_is_not_the_average_of_per_batch_variances(rng):
    bn = nn.BatchNorm1d(1, dtype=np.float64)
    batches = [np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([[10.0], [11.0], [10.0], [11.0]])]
    nn.recompute_batchnorm_statistics(bn, batches)
    everything = np.concatenate(batches)[:, 0]
    assert bn.running_mean[0] == pytest.approx(5.5, rel=RTOL)
    # 202/7: the spread of the batch means counts (the average of per-batch variances would be 1/3)
    assert bn.running_var[0] == pytest.approx(everything.var(ddof=1), rel=RTOL)
    assert bn.running_var[0] > 15


def test_a_keras_convention_layer_gets_the_biased_variance(rng):
    bn = nn.BatchNorm1d(3, convention="keras", dtype=np.float64)
    batches = [rng.standard_normal((n, 3)) for n in (4, 7)]
    nn.recompute_batchnorm_statistics(bn, batches)
    np.testing.assert_allclose(bn.running_var, np.concatenate(batches).var(axis=0), rtol=RTOL)


def test_momentum_mode_buffers_parameters_and_gradients_are_left_as_they_were(rng):
    model = with_moved_statistics(fc_model(rng), rng)
    model.eval()
    model[1].train()  # a mixed state, restored module by module
    model[7].momentum = 0.3
    dropout = nn.Dropout(0.5, rng=np.random.default_rng(0))
    model = nn.Sequential(model, dropout)
    before = model.state_dict()
    modes = [m.training for m in model.modules()]
    momenta = [m.momentum for m in batch_norms(model)]
    nn.recompute_batchnorm_statistics(model, [rng.standard_normal((12, 6)).astype(np.float32)])
    after = model.state_dict()
    assert [m.training for m in model.modules()] == modes
    assert [m.momentum for m in batch_norms(model)] == momenta == [None, 0.1, 0.3]
    for name, value in before.items():
        if name.endswith(("running_mean", "running_var")):
            assert not np.array_equal(after[name], value), name
        else:
            np.testing.assert_array_equal(after[name], value, err_msg=name)  # weights, num_batches_tracked
    assert all(p.grad is None for p in model.parameters())
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_a_batch_norm_without_running_statistics_is_left_alone(rng):
    free = nn.BatchNorm1d(4, track_running_stats=False)
    model = nn.Sequential(nn.Linear(3, 4, rng=rng), free, nn.Linear(4, 4, rng=rng), nn.BatchNorm1d(4))
    x = rng.standard_normal((10, 3)).astype(np.float32)
    expected = reference_statistics(model, [x])
    nn.recompute_batchnorm_statistics(model, [x])
    np.testing.assert_allclose(model[3].running_mean, expected[-1][0], rtol=np.finfo(np.float32).eps / 2)
    assert free.running_mean is None


def test_a_model_without_batch_norm_is_refused(rng):
    with pytest.raises(ValueError, match="no batch norm layer with running statistics"):
        nn.recompute_batchnorm_statistics(nn.Sequential(nn.Linear(3, 2, rng=rng), nn.LayerNorm(2)),
                                          [np.zeros((4, 3), np.float32)])


def test_no_batches_are_refused():
    with pytest.raises(ValueError, match="at least one batch, got none"):
        nn.recompute_batchnorm_statistics(nn.BatchNorm1d(3), [])


@pytest.mark.parametrize(("batches", "error", "message"), [
    ([np.ones((4, 6)), np.ones((4, 7))], ValueError, r"samples of one shape: batch 0 has \(6,\), batch 1 has \(7,\)"),
    ([np.ones((4, 6)), np.ones((0, 6))], ValueError, r"non-empty batches .* shape \(0, 6\) at batch 1"),
    ([np.ones(6)], ValueError, r"shape \(6,\) at batch 0"),
    ([[1.0, 2.0]], TypeError, "numpy arrays .* got list at batch 0"),
    ([{"x": 1}], TypeError, "got dict at batch 0"),
])
def test_bad_batches_are_refused_and_nothing_changes(rng, batches, error, message):
    model = with_moved_statistics(fc_model(rng, np.float64), rng).eval()
    before = model.state_dict()
    with pytest.raises(error, match=message):
        nn.recompute_batchnorm_statistics(model, batches)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert not any(m.training for m in model.modules())
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_a_batch_the_model_refuses_reports_the_layers_error(rng):
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\) expected 3 channels"):
        nn.recompute_batchnorm_statistics(nn.BatchNorm1d(3), [np.ones((4, 5), np.float32)])


def test_one_value_per_channel_has_no_unbiased_variance():
    bn = nn.BatchNorm2d(2, track_running_stats=True)
    with pytest.raises(ValueError, match="more than 1 value per channel|at least 2"):
        nn.recompute_batchnorm_statistics(bn, [np.ones((1, 2, 1, 1), np.float32)])
