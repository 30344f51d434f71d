"""L2 regularization and weight decay touch the weights of Linear and Conv2d layers only."""

import numpy as np

from normlab import nn
from normlab.distributed import SyncBatchNorm
from normlab.models.regularization import decay_groups, l2_penalty, weight_parameters


def test_only_linear_and_conv_weights_are_regularized(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, rng=rng), nn.BatchNorm2d(2), nn.InstanceNorm2d(2, affine=True), nn.GroupNorm(1, 2),
        nn.BatchRenorm2d(2), nn.GhostBatchNorm2d(2, 4), SyncBatchNorm(2), nn.Flatten(), nn.Linear(8, 3, rng=rng),
        nn.LayerNorm(3),
    )
    chosen = weight_parameters(model)
    assert [p.shape for p in chosen] == [(2, 1, 3, 3), (3, 8)]
    expected = 0.5 * 0.1 * sum(float(np.sum(p.data.astype(np.float64) ** 2)) for p in chosen)
    assert l2_penalty(model, 0.1) == expected
    decayed, undecayed = decay_groups(model, 0.01)
    assert {id(p) for p in decayed["params"]} == {id(p) for p in chosen}
    assert undecayed["weight_decay"] == 0.0
    assert len(undecayed["params"]) == len(model.parameters()) - 2
