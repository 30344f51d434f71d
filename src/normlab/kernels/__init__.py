"""Optional compiled (numba) kernels for the hot normalization paths, with the same contracts as the
NumPy core in `normlab.functional.normalize`.

- `backend`: which implementation runs (argument, NORMLAB_BACKEND, or auto-detection of numba), and
  `compiled_twin`, the one dispatch point the functional layers call.
- `normalize_twin`: the interface the normalization core calls, over `normalize`, the compiled twin of the
  core, one file per layout: batch norm's channels (and (N, D) columns), the rows of layer norm, the grouped
  rows of group and instance norm (imported only when the numba backend is chosen).
- `im2col_numba`: the copies around a convolution's matrix products (im2col, its adjoint, and the
  transposes between (N, F, P) images and (F, N*P) products), one chunk of images per thread.
- `pixels_numba`: channels-last copies for convolutions: NCHW images to and from padded "pixels"
  (n, Hp, Wp, C), and im2row, the columns of a chunk as one row of kh*kw*C values per output position.
- `winograd_numba`: the tile transforms of the Winograd convolution F(2x2, 3x3) on pixels, one chunk per
  thread.
- `pool_numba`: max and average pooling (forward and backward), one block of (image, channel) planes per
  thread.
- `copy_numba`: a parallel copy on the kernels' threads, the yardstick of `normlab bench`.

The functional layers dispatch here (`compiled_twin`); nothing here imports `normlab.functional`.
"""

from normlab.kernels.backend import BACKENDS, COMPILED_DTYPES, ENV_VAR, compiled_twin, numba_available, resolve_backend

__all__ = ["BACKENDS", "COMPILED_DTYPES", "ENV_VAR", "compiled_twin", "numba_available", "resolve_backend"]
