"""Normalization modules: parameters and running statistics around `normlab.functional`'s layers. The
names, defaults and state dict keys are PyTorch's, so state dicts interchange with torch.nn."""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.functional._checks import check_positive, check_probability
from normlab.nn.module import Module, Parameter


def _check_num_features(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _BatchNorm(Module):
    """Batch normalization over (N, C, *) inputs with per-channel statistics.

    - momentum: weight of each batch in the running statistics (PyTorch's meaning); None averages all
      batches seen so far equally (cumulative moving average, using num_batches_tracked).
    - affine: learn gamma (`weight`) and beta (`bias`); otherwise they stay 1 and 0.
    - track_running_stats: keep running_mean / running_var for evaluation; otherwise batch statistics
      are used in evaluation too.
    - convention: "pytorch" stores the unbiased running variance, "keras" the biased (see
      `normlab.functional.batchnorm_forward`).
    """

    _expected_ndims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, convention: str = "pytorch", dtype=np.float32):
        super().__init__()
        self.num_features = _check_num_features("num_features", num_features)
        check_positive("eps", eps)  # checked here too, so a bad value fails when the model is built
        if momentum is not None:
            check_probability("momentum", momentum)
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.track_running_stats, self.convention = track_running_stats, convention
        c = self.num_features
        if affine:
            self.weight = Parameter(np.ones(c, dtype))
            self.bias = Parameter(np.zeros(c, dtype))
        else:
            self._gamma, self._beta = np.ones(c, dtype), np.zeros(c, dtype)
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype))
            self.register_buffer("running_var", np.ones(c, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._cache = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def _check_input(self, x: np.ndarray) -> None:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        if self._expected_ndims and x.ndim not in self._expected_ndims:
            expected = " or ".join(f"{d}D" for d in self._expected_ndims)
            raise ValueError(f"{type(self).__name__} expected {expected} input, got {x.ndim}D input of shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expected {self.num_features} channels "
                             f"in dimension 1, got input of shape {x.shape}")

    def _momenta(self, k: int) -> list[float]:
        """The momentum of each of the next k training batches in the running statistics: `momentum`, or
        with momentum=None the cumulative average's 1 / (batch number), counted from num_batches_tracked."""
        if self.momentum is None:
            first = int(self.num_batches_tracked) + 1
            return [1.0 / t for t in range(first, first + k)]
        return [self.momentum] * k

    def _gamma_beta(self) -> tuple[np.ndarray, np.ndarray]:
        if self.affine:
            return self.weight.data, self.bias.data
        return self._gamma, self._beta

    # Subclasses (batch renorm, ghost batch norm) change these three and keep the bookkeeping below.
    _backward_fn = staticmethod(F.batchnorm_backward)

    def _batches_in(self, x: np.ndarray) -> int:
        """How many batches x counts as, in num_batches_tracked and in the running statistics."""
        return 1

    def _normalize(self, x, gamma, beta, running_mean, running_var, training: bool, momenta: list[float]):
        """The functional forward: (out, cache). momenta has one entry per batch of `_batches_in(x)`."""
        return F.batchnorm_forward(x, gamma, beta, running_mean, running_var, training=training,
                                   momentum=momenta[0], eps=self.eps, convention=self.convention)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        gamma, beta = self._gamma_beta()
        use_batch_stats = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        batches = self._batches_in(x)
        stats = (self.running_mean, self.running_var) if (update or not use_batch_stats) else (None, None)
        momenta = self._momenta(batches) if update else [0.0] * batches
        out, self._cache = self._normalize(x, gamma, beta, *stats, use_batch_stats, momenta)
        if update:  # counted after the forward succeeded, so a rejected input leaves the count alone
            self.num_batches_tracked += batches
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = self._backward_fn(dout, self._cache_or_raise(self._cache))
        if self.affine:
            self.weight.accumulate_grad(dgamma)
            self.bias.accumulate_grad(dbeta)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs: statistics per feature over the batch (and length)."""

    _expected_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Spatial batch norm over (N, C, H, W) inputs: statistics per channel over N, H and W."""

    _expected_ndims = (4,)


class LayerNorm(Module):
    """Layer normalization over the trailing `normalized_shape` (an int or a tuple that must equal
    x.shape[1:]), with an elementwise affine as torch.nn.LayerNorm."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, *, dtype=np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        for d in shape:
            _check_num_features("normalized_shape", d)
        check_positive("eps", eps)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(np.ones(shape, dtype))
            self.bias = Parameter(np.zeros(shape, dtype))
        else:
            self.weight = self.bias = None
            self._gamma, self._beta = np.ones(shape, dtype), np.zeros(shape, dtype)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.shape[1:] != self.normalized_shape:
            raise ValueError(f"LayerNorm({self.normalized_shape}) expected input of shape (N, *{self.normalized_shape}), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        gamma, beta = (self.weight.data, self.bias.data) if self.elementwise_affine else (self._gamma, self._beta)
        out, self._cache = F.layernorm_forward(x, gamma, beta, eps=self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = F.layernorm_backward(dout, self._cache_or_raise(self._cache))
        if self.elementwise_affine:
            self.weight.accumulate_grad(dgamma)
            self.bias.accumulate_grad(dbeta)
        return dx

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Group normalization of (N, C, *) inputs: C channels in `num_groups` groups, per-channel affine."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 dtype=np.float32):
        super().__init__()
        self.num_groups = _check_num_features("num_groups", num_groups)
        self.num_channels = _check_num_features("num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"num_groups must divide num_channels={num_channels}, got num_groups={num_groups}")
        check_positive("eps", eps)
        self.eps, self.affine = eps, affine
        if affine:
            self.weight = Parameter(np.ones(num_channels, dtype))
            self.bias = Parameter(np.zeros(num_channels, dtype))
        else:
            self.weight = self.bias = None
            self._gamma, self._beta = np.ones(num_channels, dtype), np.zeros(num_channels, dtype)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm expected input of shape (N, {self.num_channels}, ...), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        gamma, beta = (self.weight.data, self.bias.data) if self.affine else (self._gamma, self._beta)
        out, self._cache = F.groupnorm_forward(x, gamma, beta, self.num_groups, eps=self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = F.groupnorm_backward(dout, self._cache_or_raise(self._cache))
        if self.affine:
            self.weight.accumulate_grad(dgamma)
            self.bias.accumulate_grad(dbeta)
        return dx

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class InstanceNorm2d(Module):
    """Instance normalization of (N, C, H, W) inputs: each channel of each sample normalized over its
    H * W positions, with torch.nn.InstanceNorm2d's defaults (affine=False, no running statistics, so
    training and evaluation compute the same thing). With affine=True, a per-channel `weight` and
    `bias`, as in torch's state dict."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False, *, dtype=np.float32):
        super().__init__()
        self.num_features = _check_num_features("num_features", num_features)
        check_positive("eps", eps)
        self.eps, self.affine = eps, affine
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype))
        else:
            self.weight = self.bias = None
            self._gamma, self._beta = np.ones(num_features, dtype), np.zeros(num_features, dtype)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"InstanceNorm2d({self.num_features}) expected input of shape (N, {self.num_features}, H, W), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        gamma, beta = (self.weight.data, self.bias.data) if self.affine else (self._gamma, self._beta)
        out, self._cache = F.instancenorm_forward(x, gamma, beta, eps=self.eps)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = F.instancenorm_backward(dout, self._cache_or_raise(self._cache))
        if self.affine:
            self.weight.accumulate_grad(dgamma)
            self.bias.accumulate_grad(dbeta)
        return dx

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


NORMALIZATIONS_2D = ("none", "batch", "layer", "group", "instance", "renorm", "ghost")  # norm_registry's names


def norm2d(normalization: str, num_channels: int, *, groups: int | None = None, dtype=np.float32) -> Module:
    """The normalization layer a CNN puts after a convolution with `num_channels` output channels:
    `normlab.nn.norm_registry.build_norm(normalization, num_channels, spatial=True)`, the one vocabulary
    ("layer" is GroupNorm(1, C); "group" has the largest divisor of C not above 32 groups unless `groups`
    is given)."""
    from normlab.nn.norm_registry import build_norm  # the registry builds on this module's classes

    options = {"groups": groups} if groups is not None and normalization == "group" else {}
    return build_norm(normalization, num_channels, spatial=True, dtype=dtype, **options)
