"""Stateful modules over `normlab.functional`, with PyTorch's parameter and buffer names."""

from normlab.functional.batchrenorm import RenormSchedule
from normlab.nn.activation import ReLU, Sigmoid, Tanh
from normlab.nn.batchrenorm import BatchRenorm1d, BatchRenorm2d
from normlab.nn.container import Flatten, Identity, Sequential
from normlab.nn.dropout import Dropout
from normlab.nn.ghostbatchnorm import GhostBatchNorm1d, GhostBatchNorm2d
from normlab.nn.linear import Linear
from normlab.nn.module import Module, Parameter
from normlab.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "Dropout",
    "Flatten",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GroupNorm",
    "Identity",
    "LayerNorm",
    "Linear",
    "Module",
    "Parameter",
    "ReLU",
    "RenormSchedule",
    "Sequential",
    "Sigmoid",
    "Tanh",
]
