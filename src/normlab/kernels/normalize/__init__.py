"""The compiled (numba) twin of the normalization core, `normlab.functional.normalize`: the contract of
`normalize_affine` and `normalize_affine_backward`, fused and compiled for the layouts every normalization
reduces to, one file each (`normlab.kernels.normalize_twin` maps the core's view onto them):

- `channels.py`: x viewed as (N, C, S), one group per channel (batch norm); S = 1 in `columns.py`.
- `rows.py`: x viewed as (R, K), one group per row (layer norm); rows of channels of several elements, one
  gamma each, in `groups.py` (group and instance norm).

Each layout is built from `moments.py` (the moments of a chunk, Chan's merge, the backward's sums) and
`elementwise.py` (the centred term, xhat, the affine and the input gradient, each written once). Forward,
for a group of M elements with pivot p (its first element, as `normalize` pivots):

    shift = mean(x - p)                          so mean = p + shift, exact for data far from zero
    var   = mean((x - p - shift)^2)
    rstd  = 1 / sqrt(var + eps)
    xhat  = ((x - p) - shift) * rstd
    out   = gamma * xhat + beta

The statistics take one pass over memory, chunk by chunk. The pivot is never loaded just before the loop
that sums about it: a value fresh from memory that every element waits for stalls each chunk by a memory
latency.

Backward, with g = dout * gamma:

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))

as one reduction pass (sums of dout and of dout * xhat per group, and per parameter for dgamma and dbeta)
and one elementwise pass. xhat is never stored: it is recomputed from x, so a float32 batch norm forward
moves 12 bytes per element (read x twice, write out) and the backward 20 (read x and dout twice, write
dx). For rows (a group fits in cache) it is 8 and 12. The price: x must not change between the forward
and the backward.

Sums run in float64 whatever the input dtype; outputs are in the input's dtype. The work is parallel over
planes (n, c), rows or blocks of rows; the reductions of a block are written to partial arrays and
merged after, so the result does not depend on the thread count. Each call runs two parallel regions
(rows: one), the fewest that one statistics pass and one elementwise pass allow. Threads: numba's layer as
`normlab.kernels.backend.choose_threading_layer` picks it (`common.py` asks on import).
"""

from normlab.kernels.normalize.channels import normalize_channels, normalize_channels_backward, normalized_channels
from normlab.kernels.normalize.moments import statistics_size
from normlab.kernels.normalize.rows import normalize_rows, normalize_rows_backward, normalized_rows

__all__ = [
    "normalize_channels", "normalize_channels_backward", "normalize_rows", "normalize_rows_backward",
    "normalized_channels", "normalized_rows", "statistics_size",
]
