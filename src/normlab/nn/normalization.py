"""Normalization modules: parameters and running statistics around `normlab.functional`'s layers. The
names, defaults and state dict keys are PyTorch's, so state dicts interchange with torch.nn.

`_Normalization` is what they all share (the affine parameters, forward and backward around a functional
(out, cache) pair, the repr); `_BatchNorm` adds the running statistics of batch norm and its relatives
(batch renorm, ghost batch norm, SyncBatchNorm). Each module is then its input check and the functional
layer it calls."""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.checks import check_positive, check_positive_int, check_probability
from normlab.nn.module import Module, Parameter


class _Normalization(Module):
    """What every normalization module shares: out = gamma * xhat + beta, with xhat from a functional
    forward, its backward, and the affine parameters' gradients.

    - affine: learn gamma (`weight`, initialized to 1) and beta (`bias`, to 0), both of `param_shape`;
      otherwise `weight` and `bias` are None (as in torch's state dict) and the forward uses fixed ones
      and zeros.
    - eps: added to the variance; checked here too, so a bad value fails when the model is built.

    A subclass gives its input check (`_check_shape`, in its own words), its functional forward
    (`_normalize(x, gamma, beta) -> (out, cache)`) and backward (`_backward_fn(dout, cache) -> (dx, dgamma,
    dbeta)`), and what its repr shows: the `_repr_positional` attributes, then `_repr_keywords` as
    name=value.
    """

    _backward_fn = None  # staticmethod(F.<layer>_backward) in each subclass
    _repr_positional: tuple[str, ...] = ()
    _repr_keywords: tuple[str, ...] = ("eps", "affine")

    def __init__(self, param_shape: tuple[int, ...], eps: float, affine: bool, dtype):
        super().__init__()
        check_positive("eps", eps)
        self.eps, self.affine = eps, affine
        if affine:
            self.weight = Parameter(np.ones(param_shape, dtype))
            self.bias = Parameter(np.zeros(param_shape, dtype))
        else:
            self.weight = self.bias = None
            self._gamma, self._beta = np.ones(param_shape, dtype), np.zeros(param_shape, dtype)
        self._cache = None

    def reset_parameters(self) -> None:
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def _gamma_beta(self) -> tuple[np.ndarray, np.ndarray]:
        if self.affine:
            return self.weight.data, self.bias.data
        return self._gamma, self._beta

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        self._check_shape(x)
        out, self._cache = self._normalize(x, *self._gamma_beta())
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = self._backward_fn(dout, self._cache_or_raise(self._cache))
        if self.affine:
            self.weight.accumulate_grad(dgamma)
            self.bias.accumulate_grad(dbeta)
        return dx

    def extra_repr(self) -> str:
        positional = [str(getattr(self, name)) for name in self._repr_positional]
        return ", ".join([*positional, *(f"{name}={getattr(self, name)}" for name in self._repr_keywords)])


class _BatchNorm(_Normalization):
    """Batch normalization over (N, C, *) inputs with per-channel statistics.

    - momentum: weight of each batch in the running statistics (PyTorch's meaning); None averages all
      batches seen so far equally (cumulative moving average, using num_batches_tracked).
    - track_running_stats: keep running_mean / running_var for evaluation; otherwise batch statistics
      are used in evaluation too.
    - convention: "pytorch" stores the unbiased running variance, "keras" the biased (see
      `normlab.functional.batchnorm_forward`).
    """

    _expected_ndims: tuple[int, ...] = ()
    _forward_fn = staticmethod(F.batchnorm_forward)
    _backward_fn = staticmethod(F.batchnorm_backward)
    _repr_positional = ("num_features",)
    _repr_keywords = ("eps", "momentum", "affine", "track_running_stats")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, convention: str = "pytorch", dtype=np.float32):
        num_features = check_positive_int("num_features", num_features)
        super().__init__((num_features,), eps, affine, dtype)
        if momentum is not None:
            check_probability("momentum", momentum)
        self.num_features, self.momentum = num_features, momentum
        self.track_running_stats, self.convention = track_running_stats, convention
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        super().reset_parameters()

    def _check_shape(self, x: np.ndarray) -> None:
        name = type(self).__name__
        if self._expected_ndims and x.ndim not in self._expected_ndims:
            expected = " or ".join(f"{d}D" for d in self._expected_ndims)
            raise ValueError(f"{name} expected {expected} input, got {x.ndim}D input of shape {x.shape}")
        if x.ndim < 2:
            raise ValueError(f"{name} expected (N, C, *) input, got {x.ndim}D input of shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}) expected {self.num_features} channels "
                             f"in dimension 1, got input of shape {x.shape}")

    def _momenta(self, k: int) -> list[float]:
        """The momentum of each of the next k training batches in the running statistics: `momentum`, or
        with momentum=None the cumulative average's 1 / (batch number), counted from num_batches_tracked."""
        if self.momentum is None:
            first = int(self.num_batches_tracked) + 1
            return [1.0 / t for t in range(first, first + k)]
        return [self.momentum] * k

    def _normalize(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray):
        """Which statistics the forward uses and updates, around `_normalize_batch`."""
        use_batch_stats = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        batches = self._batches_in(x)
        stats = (self.running_mean, self.running_var) if (update or not use_batch_stats) else (None, None)
        momenta = self._momenta(batches) if update else [0.0] * batches
        result = self._normalize_batch(x, gamma, beta, *stats, use_batch_stats, momenta)
        if update:  # counted after the forward succeeded, so a rejected input leaves the count alone
            self.num_batches_tracked += batches
        return result

    # Subclasses (batch renorm, ghost batch norm, SyncBatchNorm) change these, `_forward_fn` and `_backward_fn`,
    # and keep the bookkeeping above.
    def _batches_in(self, x: np.ndarray) -> int:
        """How many batches x counts as, in num_batches_tracked and in the running statistics."""
        return 1

    def _forward_options(self, momenta: list[float]) -> dict:
        """The functional forward's keywords but training: the momentum, eps, convention, and the subclass's
        own. momenta has one entry per batch of `_batches_in(x)`."""
        return {"momentum": momenta[0], "eps": self.eps, "convention": self.convention}

    def _normalize_batch(self, x, gamma, beta, running_mean, running_var, training: bool, momenta: list[float]):
        """The functional forward: (out, cache)."""
        options = self._forward_options(momenta)
        return self._forward_fn(x, gamma, beta, running_mean, running_var, training=training, **options)


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs: statistics per feature over the batch (and length)."""

    _expected_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Spatial batch norm over (N, C, H, W) inputs: statistics per channel over N, H and W."""

    _expected_ndims = (4,)


class LayerNorm(_Normalization):
    """Layer normalization over the trailing `normalized_shape` (an int or a tuple that must equal
    x.shape[1:]), with an elementwise affine as torch.nn.LayerNorm."""

    _backward_fn = staticmethod(F.layernorm_backward)
    _repr_positional = ("normalized_shape",)
    _repr_keywords = ("eps", "elementwise_affine")

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, *, dtype=np.float32):
        try:
            shape = tuple(normalized_shape)
        except TypeError:  # one size
            shape = (normalized_shape,)
        shape = tuple(check_positive_int("normalized_shape", d) for d in shape)
        super().__init__(shape, eps, elementwise_affine, dtype)
        self.normalized_shape = shape

    @property
    def elementwise_affine(self) -> bool:
        """torch's name for `affine` here."""
        return self.affine

    def _check_shape(self, x: np.ndarray) -> None:
        if x.shape[1:] != self.normalized_shape:
            raise ValueError(f"LayerNorm({self.normalized_shape}) expected input of shape "
                             f"(N, *{self.normalized_shape}), got {x.shape}")

    def _normalize(self, x, gamma, beta):
        return F.layernorm_forward(x, gamma, beta, eps=self.eps)


class GroupNorm(_Normalization):
    """Group normalization of (N, C, *) inputs: C channels in `num_groups` groups, per-channel affine."""

    _backward_fn = staticmethod(F.groupnorm_backward)
    _repr_positional = ("num_groups", "num_channels")

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 dtype=np.float32):
        num_groups = check_positive_int("num_groups", num_groups)
        num_channels = check_positive_int("num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"num_groups must divide num_channels={num_channels}, got num_groups={num_groups}")
        super().__init__((num_channels,), eps, affine, dtype)
        self.num_groups, self.num_channels = num_groups, num_channels

    def _check_shape(self, x: np.ndarray) -> None:
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm expected input of shape (N, {self.num_channels}, ...), got {x.shape}")

    def _normalize(self, x, gamma, beta):
        return F.groupnorm_forward(x, gamma, beta, self.num_groups, eps=self.eps)


class InstanceNorm2d(_Normalization):
    """Instance normalization of (N, C, H, W) inputs: each channel of each sample normalized over its
    H * W positions, with torch.nn.InstanceNorm2d's defaults (affine=False, no running statistics, so
    training and evaluation compute the same thing). With affine=True, a per-channel `weight` and
    `bias`, as in torch's state dict."""

    _backward_fn = staticmethod(F.instancenorm_backward)
    _repr_positional = ("num_features",)

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False, *, dtype=np.float32):
        num_features = check_positive_int("num_features", num_features)
        super().__init__((num_features,), eps, affine, dtype)
        self.num_features = num_features

    def _check_shape(self, x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"InstanceNorm2d({self.num_features}) expected input of shape "
                             f"(N, {self.num_features}, H, W), got {x.shape}")

    def _normalize(self, x, gamma, beta):
        return F.instancenorm_forward(x, gamma, beta, eps=self.eps)


def norm2d(normalization: str, num_channels: int, *, groups: int | None = None, dtype=np.float32) -> Module:
    """The normalization layer a CNN puts after a convolution with `num_channels` output channels:
    `normlab.nn.norm_registry.build_norm(normalization, num_channels, spatial=True)`, the one vocabulary
    ("layer" is GroupNorm(1, C); "group" has the largest divisor of C not above 32 groups unless `groups`
    is given)."""
    from normlab.nn.norm_registry import build_norm  # the registry builds on this module's classes

    options = {"groups": groups} if groups is not None and normalization == "group" else {}
    return build_norm(normalization, num_channels, spatial=True, dtype=dtype, **options)
