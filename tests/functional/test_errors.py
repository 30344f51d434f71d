"""Bad input gets an error that names the argument, the expected and the actual shape or value."""

import numpy as np
import pytest

from normlab import functional as F

x4 = np.zeros((2, 3, 4, 4), np.float32)
ones3, zeros3 = np.ones(3, np.float32), np.zeros(3, np.float32)


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.batchnorm_forward(x4, np.ones(4), zeros3), ValueError, r"gamma must have shape \(3,\).*got shape \(4,\)"),
    (lambda: F.batchnorm_forward(x4, ones3, np.zeros((3, 1))), ValueError, r"beta must have shape \(3,\).*\(3, 1\)"),
    (lambda: F.batchnorm_forward(np.zeros(5), ones3, zeros3), ValueError, r"x must be at least 2-D.*1-D"),
    (lambda: F.batchnorm_forward(np.zeros((4, 3), np.int64), ones3, zeros3), TypeError, r"x must have a floating-point dtype.*int64"),
    (lambda: F.batchnorm_forward([[1.0, 2.0]], ones3, zeros3), TypeError, r"x must be a numpy.ndarray, got list"),
    (lambda: F.batchnorm_forward(np.zeros((1, 3), np.float32), ones3, zeros3), ValueError,
     r"Expected more than 1 value per channel when training, got input size \(1, 3\)"),
    (lambda: F.batchnorm_forward(np.zeros((1, 3, 1, 1), np.float32), ones3, zeros3), ValueError,
     r"Expected more than 1 value per channel when training"),
    (lambda: F.batchnorm_forward(x4, ones3, zeros3, training=False), ValueError,
     r"running_mean and running_var are required in evaluation mode"),
    (lambda: F.batchnorm_forward(x4, ones3, zeros3, np.zeros(3), None), ValueError, r"running_var is None"),
    (lambda: F.batchnorm_forward(x4, ones3, zeros3, np.zeros(2), np.ones(2)), ValueError,
     r"running_mean must have shape \(3,\).*got shape \(2,\)"),
    (lambda: F.batchnorm_forward(x4, ones3, zeros3, momentum=1.5), ValueError, r"momentum must be in \[0, 1\], got 1.5"),
    (lambda: F.batchnorm_forward(x4, ones3, zeros3, eps=0.0), ValueError, r"eps must be > 0, got 0.0"),
    (lambda: F.batchnorm_forward(x4, ones3, zeros3, convention="caffe"), ValueError, r"convention must be one of"),
    (lambda: F.layernorm_forward(x4, np.ones(5), np.zeros(5)), ValueError, r"gamma must have shape \(3, 4, 4\)"),
    (lambda: F.layernorm_forward(np.zeros(4), np.ones(4), np.zeros(4)), ValueError, r"x must be at least 2-D"),
    (lambda: F.groupnorm_forward(x4, ones3, zeros3, 2), ValueError,
     r"num_groups must divide the number of channels C=3, got num_groups=2"),
    (lambda: F.groupnorm_forward(x4, ones3, zeros3, 0), ValueError, r"num_groups must be a positive integer, got 0"),
    (lambda: F.instancenorm_forward(np.zeros((2, 3), np.float32), ones3, zeros3), ValueError, r"at least 3-D"),
    (lambda: F.instancenorm_forward(np.zeros((2, 3, 1, 1), np.float32), ones3, zeros3), ValueError,
     r"Expected more than 1 spatial element"),
    (lambda: F.linear_forward(np.zeros((2, 5)), np.zeros((3, 4)), None), ValueError,
     r"weight must have shape \(M, 5\) for input of shape \(2, 5\), got \(3, 4\)"),
    (lambda: F.dropout_forward(x4, 0.5, None), TypeError, r"rng must be a numpy.random.Generator"),
    (lambda: F.dropout_forward(x4, 1.0, np.random.default_rng(0)), ValueError, r"p must be < 1"),
    (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError, r"labels must lie in \[0, 3\)"),
    (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError, r"labels must be integers"),
    (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0])), ValueError, r"labels must have shape \(2,\)"),
])
def test_bad_input_is_named_in_the_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_rejects_dout_of_the_wrong_shape():
    out, cache = F.batchnorm_forward(x4 + np.arange(4, dtype=np.float32), ones3, zeros3)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3, 4, 4\).*got \(2, 3, 4\)"):
        F.batchnorm_backward(np.zeros((2, 3, 4)), cache)
