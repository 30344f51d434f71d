"""SyncBatchNorm where data-parallel code looks for it: the layer and its math are an nn module,
`normlab.nn.syncbatchnorm` (it needs of a communicator only its collectives); these are the same objects."""

from normlab.nn.syncbatchnorm import (  # noqa: F401
    CONVERTIBLE,
    SyncBatchNorm,
    SyncBatchNormCache,
    convert_sync_batchnorm,
    sync_batchnorm_backward,
    sync_batchnorm_forward,
)
