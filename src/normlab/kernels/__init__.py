"""Optional compiled (numba) kernels for the hot paths, with the contracts of their NumPy references in
`normlab.functional`. `backend` chooses which implementation runs and holds `compiled_twin`, the one dispatch
point the functional layers call; the twins (`backend.TWINS`, each module's docstring says more):

- `normalize`: the normalization core, one file per layout (batch norm's channels and (N, D) columns, the
  rows of layer norm, the grouped rows of group and instance norm);
- `im2col_numba`, `pixels_numba`, `winograd_numba`: the copies and tile transforms around a convolution's
  matrix products (channels-first, channels-last, Winograd F(2x2, 3x3)), one chunk of images per thread;
- `pool_numba`: max and average pooling, one block of (image, channel) planes per thread;
- `copy_numba`: a parallel copy on the kernels' threads, the yardstick of `normlab bench`.

Nothing is imported until a forward pass needs it; nothing here imports `normlab.functional`.
"""

from normlab.kernels.backend import BACKENDS, COMPILED_DTYPES, ENV_VAR, compiled_twin, numba_available, resolve_backend

__all__ = ["BACKENDS", "COMPILED_DTYPES", "ENV_VAR", "compiled_twin", "numba_available", "resolve_backend"]
