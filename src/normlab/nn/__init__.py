"""Stateful modules over `normlab.functional`, with PyTorch's parameter and buffer names."""

from normlab.functional.batchrenorm import RenormSchedule
from normlab.nn.activation import ReLU, Sigmoid, Tanh
from normlab.nn.batchrenorm import BatchRenorm1d, BatchRenorm2d
from normlab.nn.container import Flatten, Identity, Sequential
from normlab.nn.conv import Conv2d
from normlab.nn.dropout import Dropout
from normlab.nn.ghostbatchnorm import GhostBatchNorm1d, GhostBatchNorm2d
from normlab.nn.linear import Linear
from normlab.nn.module import Module, Parameter, input_grad_skipped
from normlab.nn.norm_registry import (
    NORMALIZATIONS_2D,
    PLACEMENTS,
    build_norm,
    check_norm_options,
    default_groups,
    get_normalization,
    normalization_names,
)
from normlab.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm, norm2d
from normlab.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from normlab.nn.precise_bn import recompute_batchnorm_statistics
from normlab.nn.residual import ResidualBlock
from normlab.nn.shift_noise import DistributionShiftNoise
from normlab.nn.syncbatchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = ["NORMALIZATIONS_2D", "PLACEMENTS", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "BatchRenorm1d",
           "BatchRenorm2d", "Conv2d", "DistributionShiftNoise", "Dropout", "Flatten", "GhostBatchNorm1d",
           "GhostBatchNorm2d", "GlobalAvgPool2d", "GroupNorm", "Identity", "InstanceNorm2d", "LayerNorm", "Linear",
           "MaxPool2d", "Module", "Parameter", "ReLU", "RenormSchedule", "ResidualBlock", "Sequential", "Sigmoid",
           "SyncBatchNorm", "Tanh", "build_norm", "check_norm_options", "convert_sync_batchnorm", "default_groups",
           "get_normalization", "input_grad_skipped", "norm2d", "normalization_names", "recompute_batchnorm_statistics"]
