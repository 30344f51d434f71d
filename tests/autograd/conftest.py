"""Shared by the autograd tests: evaluate the texts a graph writes about itself with NumPy."""

import ast
import inspect

import numpy as np
import pytest

from normlab.autograd.steps import GraphView
from normlab.functional import staged


def _as_node_shape(value, shape):
    """A text's value in the node's shape: the texts write reductions with kept axes and leave the
    broadcast of a reduced gradient back over its group implicit, as NumPy does."""
    value = np.asarray(value, dtype=np.float64)
    if value.size == int(np.prod(shape)):
        return value.reshape(shape)
    return np.broadcast_to(value, shape)


def evaluate_texts(view: GraphView):
    """Evaluate every node's forward expression and every step's gradient formula on the graph's own
    values and gradients. Returns {name: (value from text, value in the graph)} for the forward and
    {"d" + name: (gradient from text, gradient in the graph)} for the backward."""
    namespace = {
        "sum": lambda a, axis=None: np.sum(a, axis=axis, keepdims=True),
        "mean": lambda a, axis=None: np.mean(a, axis=axis, keepdims=True),
        "sqrt": np.sqrt,
        "exp": np.exp,
        "log": np.log,
        "reshape": np.reshape,
        "expand_dims": np.expand_dims,
    }
    for node in view.nodes:
        namespace[node.name] = node.tensor.data
        if node.tensor.grad is not None:
            namespace["d" + node.name] = node.tensor.grad
    pairs = {}
    for node in view.nodes:
        if node.expression is not None:
            value = eval(node.expression, {"__builtins__": {}}, namespace)  # noqa: S307 (our own texts)
            pairs[node.name] = (_as_node_shape(value, node.tensor.shape), node.tensor.data)
    for step in view.steps:
        if step.uses:
            value = eval(step.formula, {"__builtins__": {}}, namespace)  # noqa: S307
            pairs[step.gradient] = (_as_node_shape(value, step.node.tensor.shape), step.node.tensor.grad)
    return pairs


@pytest.fixture
def texts_of():
    return evaluate_texts


def _staged_assignments() -> list[str]:
    """The names `staged_backward` assigns one at a time (`name = ...`), in source order. A node of the
    graph is computed alone; `mu, var = constant_stats` is the evaluation-mode shortcut, not a node."""
    tree = ast.parse(inspect.getsource(staged.staged_backward))
    assignments = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Assign)), key=lambda n: n.lineno)
    return [t.id for n in assignments for t in n.targets if isinstance(t, ast.Name)]


@pytest.fixture
def staged_assignments():
    return _staged_assignments()


@pytest.fixture
def batchnorm_edges():
    """The arrows of the staged batch norm graph, from input to use."""
    return {
        ("x", "mu"), ("x", "xmu"), ("mu", "xmu"), ("xmu", "sq"), ("sq", "var"), ("var", "sqrtvar"),
        ("sqrtvar", "ivar"), ("xmu", "xhat"), ("ivar", "xhat"), ("gamma", "gammax"), ("xhat", "gammax"),
        ("gammax", "out"), ("beta", "out"),
    }
