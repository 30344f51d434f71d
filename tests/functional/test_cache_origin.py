"""A backward given another operation's cache says so (TypeError naming both), on both backends: a cache
from another forward with matching sizes used to give a wrong gradient without any error."""

import numpy as np
import pytest

from normlab import functional as F
from normlab.kernels.backend import numba_available

BACKENDS = ["numpy", "numba"] if numba_available() else ["numpy"]
x = np.random.default_rng(0).standard_normal((4, 4, 4, 4)).astype(np.float32)
ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)


def _caches(backend):
    """Every cache, keyed by the forward that made it; sizes chosen so the outputs all have x's shape
    where they can (the case that went wrong silently)."""
    return {
        "batchnorm_forward": F.batchnorm_forward(x, ones, zeros, backend=backend)[1],
        "layernorm_forward": F.layernorm_forward(x, ones, zeros, backend=backend)[1],
        "groupnorm_forward": F.groupnorm_forward(x, ones, zeros, 2, backend=backend)[1],
        "batchrenorm_forward": F.batchrenorm_forward(x, ones, zeros, zeros.copy(), ones.copy())[1],
        "ghost_batchnorm_forward": F.ghost_batchnorm_forward(x, ones, zeros, virtual_batch_size=2)[1],
        "max_pool2d_forward": F.max_pool2d_forward(x, 2, backend=backend)[1],
        "avg_pool2d_forward": F.avg_pool2d_forward(x, 2, backend=backend)[1],
        "conv2d_forward": F.conv2d_forward(x, np.ones((4, 4, 1, 1), np.float32), zeros)[1],
        "linear_forward": F.linear_forward(x.reshape(4, 64), np.ones((64, 64), np.float32), None)[1],
    }


BACKWARDS = {
    "batchnorm_forward": (F.batchnorm_backward, F.batchnorm_backward_staged),
    "layernorm_forward": (F.layernorm_backward, F.layernorm_backward_staged),
    "groupnorm_forward": (F.groupnorm_backward, F.instancenorm_backward),
    "batchrenorm_forward": (F.batchrenorm_backward,),
    "ghost_batchnorm_forward": (F.ghost_batchnorm_backward,),
    "max_pool2d_forward": (F.max_pool2d_backward,),
    "avg_pool2d_forward": (F.avg_pool2d_backward,),
    "conv2d_forward": (F.conv2d_backward,),
    "linear_forward": (F.linear_backward,),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backward_refuses_every_other_forwards_cache(backend):
    caches = _caches(backend)
    tried = 0
    for made_by, cache in caches.items():
        for forward, backwards in BACKWARDS.items():
            if forward == made_by:
                continue
            for backward in backwards:
                # the message names the backward called (batchnorm_backward_staged and instancenorm_backward
                # were reported as batchnorm_backward and groupnorm_backward)
                with pytest.raises(TypeError, match=f"^{backward.__name__}: cache must be the cache returned by "
                                                    f".*{forward}.*got a "):
                    backward(np.ones_like(x), cache)
                tried += 1
    assert tried == 8 * 12


@pytest.mark.parametrize("backend", BACKENDS)
def test_reported_cases_name_the_forward_that_made_the_cache(backend):
    """Layer norm's compiled cache given to batch norm's backward (same sizes) and a max-pool cache given
    to the average-pool backward: both were silently wrong."""
    caches = _caches(backend)
    with pytest.raises(TypeError, match="batchnorm_backward: cache must be the cache returned by batchnorm_forward, "
                                        "got a NormCache made by layernorm_forward"):
        F.batchnorm_backward(x, caches["layernorm_forward"])
    with pytest.raises(TypeError, match="got a PoolCache made by max_pool2d_forward"):
        F.avg_pool2d_backward(np.ones((4, 4, 2, 2), np.float32), caches["max_pool2d_forward"])
    with pytest.raises(TypeError, match="got a PoolCache made by avg_pool2d_forward"):
        F.max_pool2d_backward(np.ones((4, 4, 2, 2), np.float32), caches["avg_pool2d_forward"])
    # the right cache still works
    assert F.avg_pool2d_backward(np.ones((4, 4, 2, 2), np.float32), caches["avg_pool2d_forward"]).shape == x.shape
