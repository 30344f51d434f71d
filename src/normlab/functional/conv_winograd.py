"""3x3, stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3): 16 products per 2x2 output tile
where im2col needs 36, so the matrix products do 2.25x fewer multiplications.

The algorithm (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Cut the output
into 2x2 tiles; tile t of image n reads the 4x4 input patch d at its top-left corner (padded input). For a
3x3 filter g,

    Y = At [ (G g G^T) * (Bt d Bt^T) ] At^T          (* elementwise on 4x4)

with G (4x3), Bt (4x4) and At (2x4) fixed matrices of 0, +-1 and +-1/2 (the transforms are additions).
Summed over input channels c, position xi of the 4x4 product becomes a matrix product (T tiles, one row
per tile, channels-last as the data are laid out):

    U[xi] = (G g G^T)[xi]          (F, C)     the filters, transformed once per call
    V[xi] = (Bt d Bt^T)[xi]        (T, C)     every tile's input patch, transformed
    M[xi] = V[xi] @ U[xi]^T        (T, F)     16 products
    Y     = At M At^T              per tile and filter

The backward is the adjoint of each linear step, in reverse:

    dM[xi] = (At^T dY At)[xi]                      dout's tiles, 2x2 -> 4x4
    dV[xi] = dM[xi] @ U[xi],   dU[xi] = dM[xi]^T @ V[xi]
    dx     = sum over tiles of Bt^T dV Bt          (patches overlap by 2 rows and columns: added)
    dW     = G^T dU G                              4x4 -> 3x3 per (filter, channel)

Exact algebra: the result equals the direct convolution up to rounding (F(2x2, 3x3)'s constants are
powers of two, so it adds little; the tests hold it to the loop reference at 1e-12 in float64).

The data go channels-last: each chunk of images is copied into padded pixels (n, Hp, Wp, C)
(`normlab.kernels.pixels_numba`), and every tile transform (`normlab.kernels.winograd_numba`) combines runs of C
or F contiguous values, however small the map (NCHW planes transformed row by row of tiles, and F(4x4, 3x3),
were slower on a small ResNet's maps: docs/performance.md, "Measurements behind design choices"). The
transforms exist compiled only, so this path needs numba; `conv2d_forward` takes it where `winograd_applies`.
The filter transforms are one small product with kron(G, G) (16, 9), each 3x3 filter being a row of 9
values. Like the im2col path it works through chunks of images on threads, about TILES_PER_PRODUCT tiles
per chunk.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from normlab import memory
from normlab.blas import limited_blas_threads
from normlab.functional.conv_channels_last import chunk_images
from normlab.kernels.backend import compiled_twin
from normlab.parallel import split_over_threads

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])  # (4, 3)
GG = np.kron(G, G)  # (16, 9): (G g G^T)[a, b] = GG[4a + b] @ g.ravel() for a 3x3 filter g
TILES_PER_PRODUCT = 1024  # rows of each of the 16 products per chunk
MIN_CHANNELS = 16  # fewer input or output channels and the 16 products are too thin to pay for the transforms
MIN_OUTPUT_SIZE = 4  # on a 3x3 map the 4 tiles do 64 multiplications for 81 outputs: hardly fewer


def winograd_applies(weight_shape: tuple[int, ...], stride: tuple[int, int], groups: int,
                     out_size: tuple[int, int], kernels) -> bool:
    """Whether `conv2d_forward` takes this path: compiled transforms, 3x3 filters, stride 1, no groups, and
    channels and maps large enough for it to be the faster (a first layer's single input channel is not)."""
    return (kernels is not None and weight_shape[2:] == (3, 3) and stride == (1, 1) and groups == 1
            and min(weight_shape[:2]) >= MIN_CHANNELS and min(out_size) >= MIN_OUTPUT_SIZE)


def tile_grid(out_size: tuple[int, int]) -> tuple[int, int]:
    """(th, tw): 2x2 tiles covering an (Ho, Wo) output (the last row / column of tiles half used when odd)."""
    return -(-out_size[0] // 2), -(-out_size[1] // 2)


def transformed_filters(weight: np.ndarray) -> np.ndarray:
    """U (16, F, C) = G g G^T for every (filter, channel), in weight's dtype: one (16, 9) @ (9, F*C) product,
    on one BLAS thread: OpenBLAS's threads keep spinning after a product and took a core from the
    convolutions' workers (docs/performance.md)."""
    f, c = weight.shape[:2]
    with limited_blas_threads(1):
        return (GG.astype(weight.dtype) @ weight.reshape(f * c, 9).T).reshape(16, f, c)


def filter_gradient(du: np.ndarray) -> np.ndarray:
    """dW (F, C, 3, 3) = G^T dU G for dU (16, F, C): the adjoint of `transformed_filters`, on one BLAS thread."""
    f, c = du.shape[1:]
    with limited_blas_threads(1):
        return (du.reshape(16, f * c).T @ GG.astype(du.dtype)).reshape(f, c, 3, 3)


class TileWork:
    """The buffers for one thread's chunks of `images` images: the padded input pixels (their zero border
    is written once), the transformed tiles V and M, the output (or output-gradient) pixels, and the
    transforms' scratch: rows of a row of tiles, and one tile's rows for `output_tiles`. Recycled
    (`normlab.memory`): fresh buffers of a few MB page-faulted on every call."""

    def __init__(self, images: int, channels: int, filters: int, grid: tuple[int, int], dtype):
        th, tw = grid
        tiles = images * th * tw
        self.grid, self.images = grid, images
        self.pixels = memory.zeros((images, 2 * th + 2, 2 * tw + 2, channels), dtype)
        self.out_pixels = memory.zeros((images, 2 * th, 2 * tw, filters), dtype)  # 0 past the output's edge
        self.v_buffer = memory.empty((16 * tiles * channels,), dtype)
        self.m_buffer = memory.empty((16 * tiles * filters,), dtype)
        self.rows = np.empty((4, (2 * tw + 2) * channels), dtype)
        self.out_rows = np.empty((4, 2 * tw * filters), dtype)
        self.tile_rows = np.empty((2, 4, filters), dtype)

    def tiles(self, buffer: np.ndarray, n: int) -> np.ndarray:
        """The front of `buffer` for n images: V (16, T, C) of v_buffer, M or dM (16, T, F) of m_buffer."""
        return buffer[: buffer.size // self.images * n].reshape(16, n * self.grid[0] * self.grid[1], -1)


def winograd_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, padding: tuple[int, int],
                     out_size: tuple[int, int], kernels: ModuleType) -> np.ndarray:
    """The convolution of x (N, C, H, W) with 3x3 filters weight (F, C, 3, 3), stride 1, plus bias (F,).
    `kernels`: the compiled tile transforms (`normlab.kernels.winograd_numba`). Returns (N, F, Ho, Wo) in x's
    dtype."""
    n, c = x.shape[:2]
    f = weight.shape[0]
    grid = th, tw = tile_grid(out_size)
    u_t = transformed_filters(weight).transpose(0, 2, 1)  # (16, C, F)
    out = memory.empty((n, f, *out_size), x.dtype)
    pixels = compiled_twin("pixels", "numba")

    def images(start: int, stop: int) -> None:
        work = TileWork(chunk_images(grid, start, stop, TILES_PER_PRODUCT), c, f, grid, x.dtype)
        for first in range(start, stop, work.images):
            last = min(first + work.images, stop)
            pixels.to_pixels(x, first, last, *padding, work.pixels)
            v = work.tiles(work.v_buffer, last - first)  # (16, T, C)
            kernels.input_tiles(work.pixels, last - first, th, tw, work.rows, v)
            m = np.matmul(v, u_t, out=work.tiles(work.m_buffer, last - first))  # (16, T, F)
            kernels.output_tiles(m, last - first, th, tw, work.tile_rows, work.out_pixels)
            pixels.from_pixels(work.out_pixels, bias, first, last, 0, 0, out)

    split_over_threads(images, n)
    return out


def winograd_backward(dout: np.ndarray, x: np.ndarray, weight: np.ndarray, padding: tuple[int, int],
                      kernels: ModuleType, input_grad: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """Gradients of `winograd_forward` for dout (N, F, Ho, Wo), C-contiguous. Returns (dx (N, C, H, W) or
    None when input_grad is False, dweight (F, C, 3, 3)); the bias's gradient is conv2d_backward's."""
    n, c = x.shape[:2]
    f = weight.shape[0]
    grid = th, tw = tile_grid(dout.shape[2:])
    u = transformed_filters(weight)  # (16, F, C)
    dx = memory.empty_like(x) if input_grad else None
    no_bias = np.zeros(c, x.dtype)
    pixels = compiled_twin("pixels", "numba")

    def images(start: int, stop: int) -> np.ndarray:
        work = TileWork(chunk_images(grid, start, stop, TILES_PER_PRODUCT), c, f, grid, x.dtype)
        dx_pixels = memory.empty_like(work.pixels) if input_grad else None
        du = np.zeros((16, f, c), x.dtype)
        for first in range(start, stop, work.images):
            last = min(first + work.images, stop)
            pixels.to_pixels(dout, first, last, 0, 0, work.out_pixels)
            dm = work.tiles(work.m_buffer, last - first)  # (16, T, F)
            kernels.output_tiles_adjoint(work.out_pixels, last - first, th, tw, work.out_rows, dm)
            pixels.to_pixels(x, first, last, *padding, work.pixels)
            v = work.tiles(work.v_buffer, last - first)  # (16, T, C)
            kernels.input_tiles(work.pixels, last - first, th, tw, work.rows, v)
            du += np.matmul(dm.transpose(0, 2, 1), v)  # (16, F, C)
            if input_grad:
                dv = np.matmul(dm, u, out=v)  # (16, T, C), over V: read by the product above already
                kernels.input_tiles_adjoint(dv, last - first, th, tw, work.rows, dx_pixels)
                pixels.from_pixels(dx_pixels, no_bias, first, last, *padding, dx)
        return du

    du = sum(split_over_threads(images, n))  # (16, F, C)
    return dx, filter_gradient(du)
