"""Containers and shape plumbing."""

from __future__ import annotations

import numpy as np

from normlab.nn.module import Module, input_grad_skipped


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... as in PyTorch."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__} at position {i}")
            setattr(self, str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x: np.ndarray) -> np.ndarray:
        for m in self._modules.values():
            x = m.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        modules = list(self._modules.values())
        if self.needs_input_grad:
            for m in reversed(modules):
                dout = m.backward(dout)
            return dout
        # Without an input gradient, the layers before the first one with parameters have nothing to
        # compute, and that one need not compute its own input gradient.
        first = next((i for i, m in enumerate(modules) if m.parameters()), len(modules))
        for m in reversed(modules[first + 1 :]):
            dout = m.backward(dout)
        if first < len(modules):
            with input_grad_skipped(modules[first]):
                modules[first].backward(dout)
        return None


class Flatten(Module):
    """(N, d1, ..., dk) -> (N, d1 * ... * dk)."""

    def __init__(self) -> None:
        super().__init__()
        self._shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self._cache_or_raise(self._shape))


class Identity(Module):
    """The input unchanged (torch.nn.Identity): stands in for a layer a configuration leaves out (the
    normalization of a network built with normalization="none") or one that was removed (a batch norm folded
    into the layer before it), so the names of the layers after it stay the same."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout
