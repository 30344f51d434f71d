"""What every layout of the normalization kernels shares: how they are compiled, and how their operands
are handed to them."""

from __future__ import annotations

import numpy as np

from normlab.kernels.backend import numba_available

# Reductions may be reassociated so LLVM vectorizes them; elementwise kernels stay strict IEEE, which
# keeps ((x - p) - shift) from being rewritten as x - (p + shift). The reductions that form it too are
# held to the NumPy core by the tests on data whose mean is 1e6 standard deviations from zero.
REDUCE = {"reassoc", "contract"}
JIT = {"cache": True}
PARALLEL = {"cache": True, "parallel": True}
# The small helpers every kernel calls are inlined into their callers at numba's level, so they take the
# caller's fastmath flags exactly as if written there. numba's disk cache checks only the caller's own file:
# after editing a helper in another file of this package, clear the cache (__pycache__/*.nbi, *.nbc).
INLINE = {"inline": "always"}

numba_available()  # chooses numba's threading layer, before any kernel can start its threads


def contiguous(*arrays: np.ndarray, dtype: type | None = None) -> list[np.ndarray]:
    """The arrays C-contiguous, in `dtype` if given: gamma and beta go to the float64 kernels in float64 and
    to the working-precision ones in x's dtype (copies of C or G * C values)."""
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]
