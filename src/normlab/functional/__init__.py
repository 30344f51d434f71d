"""Stateless layers over NumPy arrays. Each forward returns (out, cache); each backward takes
(dout, cache) and returns the gradients in argument order. Every normalization is the one core,
`normalize_affine`, and returns its one cache type, `NormCache`. See docs/architecture.md."""

from normlab.functional.activations import (
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from normlab.functional.batchnorm import (
    batchnorm_backward,
    batchnorm_backward_staged,
    batchnorm_forward,
    batchnorm_inference_affine,
)
from normlab.functional.batchrenorm import RenormSchedule, batchrenorm_backward, batchrenorm_forward
from normlab.functional.conv import (
    conv2d_backward,
    conv2d_backward_loop,
    conv2d_forward,
    conv2d_forward_loop,
)
from normlab.functional.dropout import dropout_backward, dropout_forward
from normlab.functional.ghostbatchnorm import ghost_batchnorm_backward, ghost_batchnorm_forward, virtual_batch_sizes
from normlab.functional.groupnorm import (
    groupnorm_backward,
    groupnorm_forward,
    instancenorm_backward,
    instancenorm_forward,
)
from normlab.functional.layernorm import layernorm_backward, layernorm_backward_staged, layernorm_forward
from normlab.functional.linear import linear_backward, linear_forward
from normlab.functional.losses import softmax_cross_entropy
from normlab.functional.normalize import (
    NormCache,
    normalize,
    normalize_affine,
    normalize_affine_backward,
    normalize_backward,
)
from normlab.functional.pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)

__all__ = [
    "NormCache", "RenormSchedule", "avg_pool2d_backward", "avg_pool2d_forward", "batchnorm_backward",
    "batchnorm_backward_staged", "batchnorm_forward", "batchnorm_inference_affine", "batchrenorm_backward",
    "batchrenorm_forward", "conv2d_backward", "conv2d_backward_loop", "conv2d_forward", "conv2d_forward_loop",
    "dropout_backward", "dropout_forward", "ghost_batchnorm_backward", "ghost_batchnorm_forward",
    "global_avg_pool2d_backward", "global_avg_pool2d_forward", "groupnorm_backward", "groupnorm_forward",
    "instancenorm_backward", "instancenorm_forward", "layernorm_backward", "layernorm_backward_staged",
    "layernorm_forward", "linear_backward", "linear_forward", "max_pool2d_backward", "max_pool2d_forward", "normalize",
    "normalize_affine", "normalize_affine_backward", "normalize_backward", "relu_backward", "relu_forward",
    "sigmoid_backward", "sigmoid_forward", "softmax_cross_entropy", "tanh_backward", "tanh_forward",
    "virtual_batch_sizes",
]
