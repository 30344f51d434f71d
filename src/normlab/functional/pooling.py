"""Max and average pooling over the spatial axes of NCHW arrays, and global average pooling.

Both pools see the input through a (N, C, Ho, Wo, kh, kw) view of its windows and reduce it one kernel
offset at a time: window[..., i, j] is a strided (N, C, Ho, Wo) view, so a pool is kh*kw elementwise
passes over output-sized arrays, vectorized and without copying a window. (Reducing the 6-D view over
its two window axes in one NumPy call is much slower: NumPy reduces short, strided axes one element at a
time; docs/performance.md has the figures.)

- Windows that tile the input (stride == kernel, e.g. 2x2 stride 2): the view is a reshape of the input,
  (N, C, Ho, kh, Wo, kw), rows and columns left over at the bottom and right dropped as PyTorch does
  (ceil_mode=False). Every input element lies in at most one window, so the backward writes each
  offset's gradient straight into a reshaped view of dx, with no zero fill and no accumulation.
- Any other stride: the view comes from `sliding_window_view`, and the backward adds the overlapping
  windows' gradients back one kernel offset at a time (`fold_windows`).

Max pooling sends each window's gradient to the first maximum in row-major window order, as PyTorch does,
so ties (common after a ReLU: windows of zeros) get the same gradient as torch's. A NaN in a window makes
its output NaN.

With numba (`backend=`, see `normlab.kernels.backend`) float32 and float64 pools run compiled loops
instead (`normlab.kernels.pool_numba`, faster even on one thread), one block of (image, channel)
planes per thread (`normlab.parallel`); the backward runs the forward's choice. This file's NumPy code
is their reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from normlab.functional._checks import check_cache, check_float_array, check_same_shape
from normlab.functional._windows import Pair, as_pair, fold_windows, output_size, sliding_windows
from normlab.kernels.backend import COMPILED_DTYPES, compiled_twin
from normlab.parallel import split_over_threads


@dataclass(frozen=True)
class PoolCache:
    input_shape: tuple[int, ...]  # (N, C, H, W)
    kernel: Pair
    stride: Pair
    argmax: np.ndarray | None  # (N, C, Ho, Wo) index of each window's first maximum (uint8 up to 256 offsets); None for average
    compiled: bool = False  # the forward ran the compiled kernels (a flag, not the module: caches must deep-copy)
    forward: str = "max_pool2d_forward"  # which forward made it: max and average share this type

    @property
    def kernels(self) -> ModuleType | None:
        """`normlab.kernels.pool_numba` when the forward ran compiled, else None."""
        return compiled_twin("pool", "numba") if self.compiled else None


def pool_geometry(x, kernel_size, stride) -> tuple[np.ndarray, Pair, Pair, Pair]:
    """Check a pooling's arguments. Returns (x, kernel, stride, (Ho, Wo)); stride None means kernel."""
    x = check_float_array("x", x, ndims=(4,))
    kernel = as_pair("kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else as_pair("stride", stride, minimum=1)
    h, w = x.shape[2:]
    if kernel[0] > h or kernel[1] > w:
        raise ValueError(f"kernel_size {kernel} is larger than the input's spatial size {(h, w)} (x of shape {x.shape})")
    return x, kernel, stride, output_size((h, w), kernel, stride)


# Below this many input elements a pool runs in the calling thread: handing blocks to threads costs about
# what a compiled pool of 2^18 float32 elements takes on one thread (docs/performance.md).
THREADS_MIN_ELEMENTS = 1 << 18


def argmax_dtype(kernel: Pair) -> type:
    """The smallest unsigned integer type that holds every window index: uint8 for kernels up to 16x16."""
    return np.min_scalar_type(kernel[0] * kernel[1] - 1).type


def _compiled(kernel, inputs: tuple[np.ndarray, ...], size: Pair, stride: Pair, outputs: tuple[np.ndarray, ...]
              ) -> None:
    """kernel(*inputs, kh, kw, sh, sw, start, stop, *outputs), a compiled pool, over blocks [start, stop) of the
    arrays' (image, channel) planes, (N, C, H, W) seen as (N*C, H, W) C-contiguous (a view when they are): on
    threads (`split_over_threads`) when the pool's input (the forward's x, the backward's dx) has at least
    THREADS_MIN_ELEMENTS elements, else here."""
    ins = [np.ascontiguousarray(a).reshape(-1, *a.shape[2:]) for a in inputs]
    outs = [np.ascontiguousarray(a).reshape(-1, *a.shape[2:]) for a in outputs]

    def work(start: int, stop: int) -> None:
        kernel(*ins, *size, *stride, start, stop, *outs)

    if max(inputs[0].size, outputs[0].size) < THREADS_MIN_ELEMENTS:
        work(0, len(outs[0]))
    else:
        split_over_threads(work, len(outs[0]))


def _tiles(x: np.ndarray, kernel: Pair, out_size: Pair) -> np.ndarray:
    """(N, C, H, W) -> (N, C, Ho, kh, Wo, kw), a view: windows that tile x, the remainder cropped."""
    (kh, kw), (ho, wo) = kernel, out_size
    n, c = x.shape[:2]
    return x[:, :, : ho * kh, : wo * kw].reshape(n, c, ho, kh, wo, kw)


def _windows(x: np.ndarray, kernel: Pair, stride: Pair, out_size: Pair) -> np.ndarray:
    """(N, C, Ho, Wo, kh, kw) view of x's pooling windows."""
    if stride == kernel:
        return _tiles(x, kernel, out_size).transpose(0, 1, 2, 4, 3, 5)
    return sliding_windows(x, kernel, stride)


def _scatter(patches: np.ndarray, cache: PoolCache) -> np.ndarray:
    """dx from each window's gradient. patches: (kh, kw, N, C, Ho, Wo). Returns (N, C, H, W)."""
    kh, kw, *_, ho, wo = patches.shape
    if cache.stride != cache.kernel:
        return fold_windows(patches, cache.input_shape[2:], cache.stride)
    if (ho * kh, wo * kw) == tuple(cache.input_shape[2:]):
        dx = np.empty(cache.input_shape, dtype=patches.dtype)  # every element is written below
    else:
        dx = np.zeros(cache.input_shape, dtype=patches.dtype)  # the cropped remainder gets no gradient
    tiles = _tiles(dx, cache.kernel, (ho, wo))  # (N, C, Ho, kh, Wo, kw), a view of dx
    for i in range(kh):
        for j in range(kw):
            tiles[:, :, :, i, :, j] = patches[i, j]
    return dx


def max_pool2d_forward(x: np.ndarray, kernel_size: int | Pair, stride: int | Pair | None = None, *,
                       backend: str = "auto") -> tuple[np.ndarray, PoolCache]:
    """Max pooling forward pass.

    Inputs:
    - x: (N, C, H, W) float array.
    - kernel_size: int or (kh, kw).
    - stride: int, (sh, sw) or None (= kernel_size).
    - backend: "auto", "numpy" or "numba" (`normlab.kernels.backend`); the backward uses the same.

    Returns (out, cache): out (N, C, Ho, Wo), Ho = (H - kh) // sh + 1 (likewise Wo), in x's dtype.
    """
    x, kernel, stride, out_size = pool_geometry(x, kernel_size, stride)
    kernels = compiled_twin("pool", backend, x)
    n, c = x.shape[:2]
    index = argmax_dtype(kernel)
    if kernels is not None:
        out = np.empty((n, c, *out_size), x.dtype)
        argmax = np.empty(out.shape, index)
        _compiled(kernels.max_pool_forward, (x,), kernel, stride, (out, argmax))
        return out, PoolCache(x.shape, kernel, stride, argmax, compiled=True)
    windows = _windows(x, kernel, stride, out_size)  # (N, C, Ho, Wo, kh, kw)
    out = windows[..., 0, 0].copy()  # (N, C, Ho, Wo), the running maximum
    argmax = np.zeros(out.shape, dtype=index)
    better = np.empty(out.shape, dtype=bool)
    for offset in range(1, kernel[0] * kernel[1]):
        value = windows[..., offset // kernel[1], offset % kernel[1]]
        np.greater(value, out, out=better)  # strictly greater: the first maximum keeps the index
        np.maximum(out, value, out=out)  # (propagates NaN)
        # Offsets only grow, so "argmax = offset where better" is a maximum: branch-free, unlike a masked copy.
        np.maximum(argmax, better * index(offset), out=argmax)
    return out, PoolCache(x.shape, kernel, stride, argmax)


def max_pool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Max pooling backward: each window's gradient goes to its (first) maximum. Returns dx (N, C, H, W)."""
    check_cache("max_pool2d_backward", cache, PoolCache, "max_pool2d_forward")
    n, c = cache.input_shape[:2]
    kh, kw = cache.kernel
    dout = check_same_shape("dout", dout, (n, c, *cache.argmax.shape[2:]))
    if cache.kernels is not None and dout.dtype in COMPILED_DTYPES:
        dx = np.empty(cache.input_shape, dout.dtype)
        _compiled(cache.kernels.max_pool_backward, (dout, cache.argmax), cache.kernel, cache.stride, (dx,))
        return dx
    offsets = np.arange(kh * kw, dtype=cache.argmax.dtype).reshape(kh, kw, 1, 1, 1, 1)
    patches = (cache.argmax == offsets) * dout  # (kh, kw, N, C, Ho, Wo), in dout's dtype
    return _scatter(patches, cache)


def avg_pool2d_forward(x: np.ndarray, kernel_size: int | Pair, stride: int | Pair | None = None, *,
                       backend: str = "auto") -> tuple[np.ndarray, PoolCache]:
    """Average pooling forward pass; same inputs and returns as `max_pool2d_forward`."""
    x, kernel, stride, out_size = pool_geometry(x, kernel_size, stride)
    kernels = compiled_twin("pool", backend, x)
    if kernels is not None:
        out = np.empty((*x.shape[:2], *out_size), x.dtype)
        _compiled(kernels.avg_pool_forward, (x,), kernel, stride, (out,))
        return out, PoolCache(x.shape, kernel, stride, None, compiled=True, forward="avg_pool2d_forward")
    windows = _windows(x, kernel, stride, out_size)  # (N, C, Ho, Wo, kh, kw)
    out = windows[..., 0, 0].copy()  # (N, C, Ho, Wo), the running sum
    for offset in range(1, kernel[0] * kernel[1]):
        out += windows[..., offset // kernel[1], offset % kernel[1]]
    out /= kernel[0] * kernel[1]
    return out, PoolCache(x.shape, kernel, stride, None, forward="avg_pool2d_forward")


def avg_pool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Average pooling backward: each window spreads its gradient evenly, 1 / (kh*kw) to each element.
    Returns dx (N, C, H, W)."""
    check_cache("avg_pool2d_backward", cache, PoolCache, "avg_pool2d_forward")
    n, c, h, w = cache.input_shape
    kh, kw = cache.kernel
    dout = check_same_shape("dout", dout, (n, c, *output_size((h, w), cache.kernel, cache.stride)))
    if cache.kernels is not None and dout.dtype in COMPILED_DTYPES:
        dx = np.empty(cache.input_shape, dout.dtype)
        _compiled(cache.kernels.avg_pool_backward, (dout,), cache.kernel, cache.stride, (dx,))
        return dx
    share = dout / (kh * kw)  # (N, C, Ho, Wo)
    return _scatter(np.broadcast_to(share, (kh, kw, *share.shape)), cache)


def global_avg_pool2d_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Mean over all spatial positions: (N, C, H, W) -> (N, C). Returns (out, cache = x's shape)."""
    x = check_float_array("x", x, ndims=(4,))
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool2d_backward(dout: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Every position receives 1 / (H*W) of its channel's gradient. Returns dx (N, C, H, W), contiguous."""
    n, c, h, w = input_shape
    dout = check_same_shape("dout", dout, (n, c))
    return np.ascontiguousarray(np.broadcast_to((dout / (h * w))[:, :, None, None], input_shape))
