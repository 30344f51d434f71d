"""Keras twins of the convolutional layers beyond the parametrized "cnn" kind: ResidualBlock with every
norm2d variant (instance norm as one-channel groups included) and a strided shortcut, forward and
weights read back in normlab's layout."""

import numpy as np
import pytest

from normlab import nn
from normlab.interop import state_dict_from_keras, to_keras

FLOAT32 = 1e-5


@pytest.mark.parametrize("normalization", ["batch", "group", "layer", "instance", "none"])
def test_residual_block_matches_keras(keras, make_batch, assert_close, normalization):
    rng = np.random.default_rng(4)
    block = nn.ResidualBlock(4, 6, 2, normalization, rng=rng)
    for p in block.parameters():  # gamma and beta away from 1 and 0, so a lost affine shows
        p.data[...] = rng.standard_normal(p.shape)
    x, _ = make_batch((4, 5, 5), seed=3)
    twin = to_keras(block, (4, 5, 5))
    back = state_dict_from_keras(block, twin)  # before training moves the running statistics apart
    assert set(back) == {k for k in block.state_dict() if not k.endswith("num_batches_tracked")}
    assert all(np.array_equal(back[k], v) for k, v in block.state_dict().items() if k in back)
    out = np.asarray(twin(np.moveaxis(x, 1, -1), training=True))  # (N, H', W', C)
    assert_close(block(x), np.moveaxis(out, -1, 1), FLOAT32, "output")
