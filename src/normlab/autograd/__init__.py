"""A tiny reverse-mode autograd engine over NumPy arrays that derives the staged backward of the
normalizations, explains it step by step and draws its computational graph (DOT, via Graphviz)."""

from normlab.autograd.graphs import KINDS, NormGraph, batchnorm_graph, groupnorm_graph, layernorm_graph, sample_graph
from normlab.autograd.steps import GraphView
from normlab.autograd.tensor import Tensor

__all__ = ["KINDS", "GraphView", "NormGraph", "Tensor", "batchnorm_graph", "groupnorm_graph", "layernorm_graph",
           "sample_graph"]
