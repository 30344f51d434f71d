"""The optional rows of `normlab bench`: a 2-D convolution and one training step (forward, loss,
backward) of the deeper batch-normalized CNN, each against its PyTorch twin.

A row that fails says why instead of a time.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from normlab.functional import conv2d_backward, conv2d_forward, softmax_cross_entropy
from normlab.interop.torch import to_torch
from normlab.models import build_model
from normlab.nn import input_grad_skipped
from normlab.timing import SETTLE_SECONDS, Pass, PassTimes, time_passes


def conv2d_passes(torch: ModuleType | None, shape: tuple[int, ...], filters: int, rng: np.random.Generator
                  ) -> dict[str, Pass]:
    """3x3 convolution, stride 1, padding 1, of an (N, C, H, W) float32 input: normlab and torch."""
    x = rng.standard_normal(shape, dtype=np.float32)
    weight = rng.standard_normal((filters, shape[1], 3, 3), dtype=np.float32) * 0.1
    bias = np.zeros(filters, np.float32)
    out, _ = conv2d_forward(x, weight, bias, 1, 1)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    passes = {"normlab": (lambda: conv2d_forward(x, weight, bias, 1, 1)[1],
                          lambda cache: conv2d_backward(dout, cache))}
    if torch is not None:
        xt = torch.from_numpy(x).requires_grad_()
        wt, bt = torch.from_numpy(weight).requires_grad_(), torch.from_numpy(bias).requires_grad_()
        doutt = torch.from_numpy(dout)

        def backward(out):
            xt.grad = wt.grad = bt.grad = None
            out.backward(doutt)

        passes["torch"] = (lambda: torch.nn.functional.conv2d(xt, wt, bt, 1, 1), backward)
    return passes


def cnn_step_passes(torch: ModuleType | None, batch: int, rng: np.random.Generator) -> dict[str, Pass]:
    """One training step of the "bn-cnn" model on a batch of 1x28x28 images: forward, softmax
    cross-entropy and backward, in normlab and in its torch twin (no optimizer update)."""
    model = build_model("bn-cnn", input_shape=(1, 28, 28), num_classes=10, rng=rng).train()
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, batch)

    def backward(logits):
        model.zero_grad()
        with input_grad_skipped(model):  # as torch, whose input does not require grad
            model.backward(softmax_cross_entropy(logits, labels)[1])

    passes = {"normlab": (lambda: model.forward(x), backward)}
    if torch is not None:
        twin = to_torch(model).train()
        xt, labelst = torch.from_numpy(x), torch.from_numpy(labels)

        def torch_backward(logits):
            twin.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(logits, labelst).backward()

        passes["torch"] = (lambda: twin(xt), torch_backward)
    return passes


def measure_optional(build, repeats: int, settle: float = SETTLE_SECONDS, burst: int = 1
                     ) -> dict[str, PassTimes] | str:
    """Times of the passes `build()` returns (`settle` seconds of idle before each turn), or the reason
    they cannot run."""
    try:
        return time_passes(build(), repeats, settle=settle, burst=burst)
    except Exception as e:  # noqa: BLE001 - an API that moved under us: report it, do not sink the bench
        return f"not available: {type(e).__name__}: {e}"
