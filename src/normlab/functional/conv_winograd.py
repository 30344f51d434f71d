"""3x3, stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3): 16 products per 2x2 output tile
where im2col needs 36, so the matrix products do 2.25x fewer multiplications.

The algorithm (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Cut the output
into 2x2 tiles; tile t of image n reads the 4x4 input patch d at its top-left corner (padded input). For a
3x3 filter g,

    Y = At [ (G g G^T) * (Bt d Bt^T) ] At^T          (* elementwise on 4x4)

with G (4x3), Bt (4x4) and At (2x4) fixed matrices of 0, +-1 and +-1/2 (the transforms are additions).
Summed over input channels c, position xi of the 4x4 product becomes a matrix product:

    U[xi] = (G g G^T)[xi]      (F, C)     the filters, transformed once per call
    V[xi] = (Bt d Bt^T)[xi]    (C, T)     every tile's input patch, transformed
    M[xi] = U[xi] @ V[xi]      (F, T)     16 products
    Y     = At M At^T          per tile and filter

The backward is the adjoint of each linear step, in reverse:

    dM[xi] = (At^T dY At)[xi]                  dout's tiles, 2x2 -> 4x4
    dV[xi] = U[xi]^T @ dM[xi],   dU[xi] = dM[xi] @ V[xi]^T
    dx     = sum over tiles of Bt^T dV Bt      (patches overlap by 2 rows and columns: added)
    dW     = G^T dU G                          4x4 -> 3x3 per (filter, channel)

Exact algebra: the result equals the direct convolution up to rounding (F(2x2, 3x3)'s constants are
powers of two, so it adds little; the tests hold it to the loop reference at 1e-12 in float64).

The tile transforms are compiled loops (`normlab.kernels.winograd_numba`), so this path exists with numba
only; `conv2d_forward` uses it for 3x3, stride-1, ungrouped float32 or float64 convolutions with 16 or more
input and output channels and maps of 8x8 or more (`winograd_applies`). Like the im2col path it works
through chunks of images on threads, TILES_PER_PRODUCT tiles each (V and M of a few MB for up to ~64
channels, in cache; proportionally more for wider layers).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from normlab import memory
from normlab.parallel import split_over_threads

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])  # (4, 3)
TILES_PER_PRODUCT = 1024  # columns of each of the 16 products per chunk


MIN_CHANNELS = 16  # fewer input or output channels and the 16 products are too thin to pay for the transforms
MIN_OUTPUT_SIZE = 8  # smaller maps and the per-plane work of the transforms outweighs the saving


def winograd_applies(weight_shape: tuple[int, ...], stride: tuple[int, int], groups: int,
                     out_size: tuple[int, int], kernels) -> bool:
    """Whether `conv2d_forward` takes this path: compiled transforms, 3x3 filters, stride 1, no groups, and
    channels and maps large enough for it to be the faster (measured on 2 cores: 1.7x faster than im2col
    for 32x32 and 14x14 maps, slower for 7x7 and 4x4, and for a first layer's single input channel)."""
    return (kernels is not None and weight_shape[2:] == (3, 3) and stride == (1, 1) and groups == 1
            and min(weight_shape[:2]) >= MIN_CHANNELS and min(out_size) >= MIN_OUTPUT_SIZE)


def tile_grid(out_size: tuple[int, int]) -> tuple[int, int]:
    """(th, tw): 2x2 tiles covering an (Ho, Wo) output (the last row / column of tiles half used when odd)."""
    return -(-out_size[0] // 2), -(-out_size[1] // 2)


def transformed_filters(weight: np.ndarray) -> np.ndarray:
    """U (16, F, C) = G g G^T for every (filter, channel), in weight's dtype."""
    u = np.einsum("ai,fcij,bj->abfc", G, weight, G)  # (4, 4, F, C)
    return u.reshape(16, *weight.shape[:2]).astype(weight.dtype)


def winograd_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, padding: tuple[int, int],
                     out_size: tuple[int, int], kernels: ModuleType) -> np.ndarray:
    """The convolution of x (N, C, H, W) with 3x3 filters weight (F, C, 3, 3), stride 1, plus bias (F,).
    Returns (N, F, Ho, Wo) in x's dtype."""
    n, c = x.shape[:2]
    f = weight.shape[0]
    th, tw = tile_grid(out_size)
    chunk = max(1, TILES_PER_PRODUCT // (th * tw))
    u = transformed_filters(weight)  # (16, F, C)
    out = memory.empty((n, f, *out_size), x.dtype)

    def images(start: int, stop: int) -> None:
        x_scratch = np.empty((2 * th + 2, 2 * tw + 2), x.dtype)
        out_scratch = np.empty((2 * th, 2 * tw), x.dtype)
        v_buffer = np.empty(16 * c * chunk * th * tw, x.dtype)
        for first in range(start, stop, chunk):
            last = min(first + chunk, stop)
            v = v_buffer[: 16 * c * (last - first) * th * tw].reshape(16, c, -1)  # (16, C, T)
            kernels.input_tiles(x, first, last, *padding, th, tw, x_scratch, v)
            kernels.output_tiles(np.matmul(u, v), bias, first, last, th, tw, out_scratch, out)  # M: (16, F, T)

    split_over_threads(images, n)
    return out


def winograd_backward(dout: np.ndarray, x: np.ndarray, weight: np.ndarray, padding: tuple[int, int],
                      kernels: ModuleType, input_grad: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of `winograd_forward` for dout (N, F, Ho, Wo), C-contiguous. Returns (dx (N, C, H, W) or
    None when input_grad is False, dweight (F, C, 3, 3), dbias (F,))."""
    n, c = x.shape[:2]
    f = weight.shape[0]
    th, tw = tile_grid(dout.shape[2:])
    chunk = max(1, TILES_PER_PRODUCT // (th * tw))
    u_t = transformed_filters(weight).transpose(0, 2, 1)  # (16, C, F)
    dx = memory.empty_like(x) if input_grad else None

    def images(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x_scratch = np.empty((2 * th + 2, 2 * tw + 2), x.dtype)
        dout_scratch = np.empty((2 * th, 2 * tw), x.dtype)
        tiles = chunk * th * tw
        v_buffer, dm_buffer = np.empty(16 * c * tiles, x.dtype), np.empty(16 * f * tiles, x.dtype)
        du = np.zeros((16, f, c), x.dtype)
        for first in range(start, stop, chunk):
            last = min(first + chunk, stop)
            t = (last - first) * th * tw
            v, dm = v_buffer[: 16 * c * t].reshape(16, c, t), dm_buffer[: 16 * f * t].reshape(16, f, t)
            kernels.input_tiles(x, first, last, *padding, th, tw, x_scratch, v)
            kernels.output_tiles_adjoint(dout, first, last, th, tw, dout_scratch, dm)
            du += np.matmul(dm, v.transpose(0, 2, 1))  # (16, F, C)
            if input_grad:
                dv = np.matmul(u_t, dm, out=v)  # (16, C, T), over V: read by the product above already
                kernels.input_tiles_adjoint(dv, first, last, *padding, th, tw, x_scratch, dx)
        return du

    du = sum(split_over_threads(images, n))  # (16, F, C)
    dweight = np.einsum("ai,abfc,bj->fcij", G, du.reshape(4, 4, f, c), G).astype(x.dtype)  # (F, C, 3, 3)
    return dx, dweight, dout.sum(axis=(0, 2, 3))
