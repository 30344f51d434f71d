"""The numbers behind each step of a graph: what the interactive page shows, computed by normlab.

The forward is one step per node (its value); the backward one step per gradient, in the order of
`GraphView.steps`. A backward step lists, for every use of the node, the local gradient, the upstream
gradient, their product and, where the forward broadcast the node, that product summed back to the
node's shape; the node's gradient is the sum over its uses. For xmu in batch norm, used by xhat and sq:

    through xhat:  local ivar (1, 3)  x  upstream dxhat (4, 3)  =  ivar * dxhat (4, 3)
    through sq:    local 2 * xmu (4, 3)  x  upstream dsq (4, 3)  =  2 * xmu * dsq (4, 3)
    dxmu = the sum of the two products

Where the local gradient is not a factor of the upstream gradient (@, reshape, or a reduction inside
a folded step), the product is the operation's own backward applied to the upstream gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab.autograd.steps import GraphView, Node, Step, Use
from normlab.autograd.tensor import Tensor, _broadcast_axes, _unbroadcast


@dataclass(frozen=True)
class UseValues:
    """One use of a node in a backward step, as numbers."""

    use: Use
    local: np.ndarray | None  # broadcasts against upstream; None when not a factor
    upstream: np.ndarray  # the consumer's gradient
    product: np.ndarray  # local * upstream (or the operation's backward of upstream)
    summed: np.ndarray  # product summed over the broadcast axes: this use's share of the gradient
    sum_axes: tuple[int, ...]  # the axes of product that `summed` sums over (empty: summed is product)


@dataclass(frozen=True)
class BackwardValues:
    """One backward step as numbers: the gradient, and how each use contributes to it."""

    step: Step
    gradient: np.ndarray
    uses: tuple[UseValues, ...]  # empty for the output, whose gradient is the upstream gradient


def forward_values(view: GraphView) -> list[tuple[Node, np.ndarray]]:
    """(node, value) for every node, in forward order."""
    return [(node, node.tensor.data) for node in view.nodes]


def backward_values(view: GraphView) -> list[BackwardValues]:
    """Every backward step with its numbers, in the order of `view.steps`.

    Raises ValueError when the graph has not run backward (no gradient on its output).
    """
    if view.out.grad is None:
        raise ValueError("the graph has no gradients: call backward() on its output before tracing it")
    return [BackwardValues(step, step.node.tensor.grad, tuple(use_values(step.node.tensor, use) for use in step.uses))
            for step in view.steps]


def use_values(tensor: Tensor, use: Use) -> UseValues:
    """The numbers of one use of `tensor` (see the module docstring)."""
    first, index = use.path[0]
    consumer = use.path[-1][0]
    upstream = consumer.grad
    if use.local is None:
        local = None
        product = first.vjps[index](first.grad)
    elif len(use.path) == 1:
        local = np.asarray(first.local_factors[index]())
        product = first.vjps[index](upstream)  # a reduction spreads upstream back over its axes
    else:  # a chain of elementwise steps folded into the consumer: the factors multiply
        local = np.asarray(1.0)
        for op, i in use.path:
            local = local * op.local_factors[i]()
        product = local * upstream
    product = np.asarray(product)
    summed = _unbroadcast(product, tensor.shape)
    sum_axes = () if product.shape == tensor.shape else _broadcast_axes(tensor.shape, product.shape)
    return UseValues(use, local, upstream, product, summed, sum_axes)

