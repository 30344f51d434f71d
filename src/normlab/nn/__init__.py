"""Stateful modules over `normlab.functional`, with PyTorch's parameter and buffer names."""

from normlab.nn.activation import ReLU, Sigmoid, Tanh
from normlab.nn.container import Flatten, Sequential
from normlab.nn.dropout import Dropout
from normlab.nn.linear import Linear
from normlab.nn.module import Module, Parameter
from normlab.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "Dropout",
    "Flatten",
    "GroupNorm",
    "LayerNorm",
    "Linear",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]
