"""The normalization rows of `normlab bench`: forward and backward of batch norm (both layouts), layer
norm and group norm, on the chosen backend, on NumPy, and on PyTorch's CPU kernels.

Bytes per element are the least memory traffic any implementation needs, in units of the element size
(4 bytes for float32):

- batch norm: forward 3 (read x for the statistics, read it again and write out), backward 5 (read x
  and dout for the two sums, read them again and write dx). A channel's values span the whole batch, so
  no cache holds them between the passes.
- layer and group norm: forward 2, backward 3. A group is one sample's row, which stays in cache
  between the passes; counting 3 and 5 here would flatter the figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from normlab import functional as F
from normlab.timing import SETTLE_SECONDS, Pass, PassTimes, time_passes


@dataclass(frozen=True)
class NormCase:
    """One normalization to measure: its name, input shape, and traffic per element (element sizes)."""

    name: str
    shape: tuple[int, ...]
    forward_traffic: int
    backward_traffic: int
    num_groups: int = 0  # group norm only


FULL_CASES = (
    NormCase("batchnorm (N, D)", (8192, 1024), 3, 5),
    NormCase("batchnorm (N, C, H, W)", (128, 64, 32, 32), 3, 5),
    NormCase("layernorm (N, D)", (8192, 768), 2, 3),
    NormCase("groupnorm G=32", (128, 64, 32, 32), 2, 3, num_groups=32),
)
QUICK_CASES = (
    NormCase("batchnorm (N, D)", (256, 128), 3, 5),
    NormCase("batchnorm (N, C, H, W)", (8, 8, 8, 8), 3, 5),
    NormCase("layernorm (N, D)", (256, 96), 2, 3),
    NormCase("groupnorm G=4", (8, 8, 8, 8), 2, 3, num_groups=4),
)


def _normlab_pass(case: NormCase, x: np.ndarray, dout: np.ndarray, backend: str) -> Pass:
    c = x.shape[1]
    gamma, beta = np.ones(c, x.dtype), np.zeros(c, x.dtype)
    if case.name.startswith("batchnorm"):
        running_mean, running_var = np.zeros(c, x.dtype), np.ones(c, x.dtype)
        return (lambda: F.batchnorm_forward(x, gamma, beta, running_mean, running_var, backend=backend)[1],
                lambda cache: F.batchnorm_backward(dout, cache))
    if case.name.startswith("layernorm"):
        gamma, beta = np.ones(x.shape[1:], x.dtype), np.zeros(x.shape[1:], x.dtype)
        return (lambda: F.layernorm_forward(x, gamma, beta, backend=backend)[1],
                lambda cache: F.layernorm_backward(dout, cache))
    return (lambda: F.groupnorm_forward(x, gamma, beta, case.num_groups, backend=backend)[1],
            lambda cache: F.groupnorm_backward(dout, cache))


def _torch_pass(torch: ModuleType, case: NormCase, x: np.ndarray, dout: np.ndarray) -> Pass:
    tf = torch.nn.functional
    xt, doutt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)
    c = x.shape[1]
    if case.name.startswith("batchnorm"):
        weight, bias = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
        running_mean, running_var = torch.zeros(c), torch.ones(c)
        forward: Callable = lambda: tf.batch_norm(xt, running_mean, running_var, weight, bias, training=True)
    elif case.name.startswith("layernorm"):
        weight, bias = torch.ones(x.shape[1:], requires_grad=True), torch.zeros(x.shape[1:], requires_grad=True)
        forward = lambda: tf.layer_norm(xt, x.shape[1:], weight, bias)
    else:
        weight, bias = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
        forward = lambda: tf.group_norm(xt, case.num_groups, weight, bias)

    def backward(out):
        for t in (xt, weight, bias):
            t.grad = None  # a fresh gradient each time, as an optimizer's zero_grad leaves it
        out.backward(doutt)

    return forward, backward


def measure_norm(case: NormCase, backend: str, torch: ModuleType | None, repeats: int,
                 rng: np.random.Generator, settle: float = SETTLE_SECONDS, burst: int = 1) -> dict[str, PassTimes]:
    """Times of the case on `backend` ("numba" or "numpy"), on NumPy for reference, and on torch, with
    `settle` seconds of idle before each turn (see `time_passes`).

    Returns {"normlab": ..., "numpy": ..., "torch": ...}, without the entries that do not apply.
    """
    x = rng.standard_normal(case.shape, dtype=np.float32) * 2 + 1
    dout = rng.standard_normal(case.shape, dtype=np.float32)
    contenders = {"normlab": _normlab_pass(case, x, dout, backend)}
    if backend != "numpy":
        contenders["numpy"] = _normlab_pass(case, x, dout, "numpy")
    if torch is not None:
        contenders["torch"] = _torch_pass(torch, case, x, dout)
    return time_passes(contenders, repeats, settle=settle, burst=burst)
