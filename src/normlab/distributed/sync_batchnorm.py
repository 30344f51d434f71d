"""SyncBatchNorm in `normlab.distributed`, where data-parallel code looks for it. The layer and its math
live in `normlab.nn.syncbatchnorm` (it is an nn module, `normlab.nn.SyncBatchNorm`, and needs of a
communicator only its collectives); these are the same objects."""

from normlab.nn.syncbatchnorm import (
    CONVERTIBLE,
    SyncBatchNorm,
    SyncBatchNormCache,
    convert_sync_batchnorm,
    sync_batchnorm_backward,
    sync_batchnorm_forward,
)

__all__ = ["CONVERTIBLE", "SyncBatchNorm", "SyncBatchNormCache", "convert_sync_batchnorm", "sync_batchnorm_backward",
           "sync_batchnorm_forward"]
