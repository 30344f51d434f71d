"""Evaluation-mode batch norm is one per-channel affine map: batchnorm_inference_affine gives it."""

import numpy as np
import pytest

from normlab import functional as F
from normlab.gradcheck import relative_error


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 4)])
def test_affine_equals_evaluation_mode_batchnorm(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta, mean = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    var = rng.uniform(0.1, 4, 3)
    out, _ = F.batchnorm_forward(x, gamma, beta, mean, var, training=False, eps=1e-3)
    scale, shift = F.batchnorm_inference_affine(gamma, beta, mean, var, 1e-3)
    per_channel = (1, 3) + (1,) * (len(shape) - 2)
    assert relative_error(x * scale.reshape(per_channel) + shift.reshape(per_channel), out) < 1e-15


def test_bad_arguments_are_named():
    ones = np.ones(3)
    with pytest.raises(ValueError, match=r"running_var must have gamma's shape \(3,\), got \(2,\)"):
        F.batchnorm_inference_affine(ones, ones, ones, np.ones(2), 1e-5)
    with pytest.raises(ValueError, match="eps must be > 0, got 0"):
        F.batchnorm_inference_affine(ones, ones, ones, ones, 0)
