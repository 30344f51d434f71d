"""Batch, layer and group norm as named steps on the engine give the functional layers' outputs and
gradients (staged and closed form) to 1e-12 in float64, with the staged backward's node names."""

import re

import numpy as np
import pytest

from normlab import functional as F
from normlab.autograd import batchnorm_graph, groupnorm_graph, layernorm_graph, sample_graph
from normlab.functional import staged
from normlab.functional.staged import STAGED_NODES
from normlab.gradcheck import relative_error


def _batch(rng, shape, param_shape):
    x = 3.0 + 2.0 * rng.standard_normal(shape)
    return x, rng.standard_normal(param_shape), rng.standard_normal(param_shape), rng.standard_normal(shape)


def _assert_same(ours, theirs, tolerance=1e-12):
    for name, a, b in zip(("dx", "dgamma", "dbeta"), ours, theirs):
        assert a.shape == b.shape, name
        assert relative_error(a, b) < tolerance, (name, relative_error(a, b))


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 2, 3)])
def test_batchnorm_graph_matches_staged_and_simplified_backward(shape):
    rng = np.random.default_rng(0)
    x, gamma, beta, dout = _batch(rng, shape, (shape[1],))
    graph = batchnorm_graph(x, gamma, beta, eps=1e-5)
    out, cache = F.batchnorm_forward(x, gamma, beta, eps=1e-5)
    assert relative_error(graph.out.data, out) < 1e-12
    grads = graph.backward(dout)
    _assert_same(grads, F.batchnorm_backward_staged(dout, cache))
    _assert_same(grads, F.batchnorm_backward(dout, cache))


@pytest.mark.parametrize("shape", [(6, 5), (3, 2, 2, 3)])
def test_layernorm_graph_matches_staged_and_simplified_backward(shape):
    rng = np.random.default_rng(1)
    x, gamma, beta, dout = _batch(rng, shape, shape[1:])
    graph = layernorm_graph(x, gamma, beta)
    out, cache = F.layernorm_forward(x, gamma, beta)
    assert relative_error(graph.out.data, out) < 1e-12
    grads = graph.backward(dout)
    _assert_same(grads, F.layernorm_backward_staged(dout, cache))
    _assert_same(grads, F.layernorm_backward(dout, cache))


@pytest.mark.parametrize("shape, groups", [((3, 6, 2, 2), 3), ((3, 6, 2, 2), 1), ((4, 6), 2), ((2, 4, 3, 3), 4)])
def test_groupnorm_graph_matches_simplified_backward(shape, groups):
    rng = np.random.default_rng(2)
    x, gamma, beta, dout = _batch(rng, shape, (shape[1],))
    graph = groupnorm_graph(x, gamma, beta, groups)
    out, cache = F.groupnorm_forward(x, gamma, beta, groups)
    assert relative_error(graph.out.data, out) < 1e-12
    _assert_same(graph.backward(dout), F.groupnorm_backward(dout, cache))


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm", "groupnorm"])
def test_graphs_match_pytorch_autograd(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    shape = (3, 4, 2, 2)
    param_shape = shape[1:] if kind == "layernorm" else (shape[1],)
    x, gamma, beta, dout = _batch(rng, shape, param_shape)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    if kind == "batchnorm":
        graph = batchnorm_graph(x, gamma, beta)
        tout = torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5)
    elif kind == "layernorm":
        graph = layernorm_graph(x, gamma, beta)
        tout = torch.nn.functional.layer_norm(tx, shape[1:], tg, tb, eps=1e-5)
    else:
        graph = groupnorm_graph(x, gamma, beta, 2)
        tout = torch.nn.functional.group_norm(tx, 2, tg, tb, eps=1e-5)
    tout.backward(torch.tensor(dout))
    assert relative_error(graph.out.data, tout.detach().numpy()) < 1e-12
    _assert_same(graph.backward(dout), (tx.grad.numpy(), tg.grad.numpy(), tb.grad.numpy()), 1e-11)


def test_graph_nodes_carry_the_staged_backward_names():
    rng = np.random.default_rng(4)
    x, gamma, beta, _ = _batch(rng, (4, 3), (3,))
    for graph in (batchnorm_graph(x, gamma, beta), layernorm_graph(x, gamma, beta)):
        assert tuple(graph.nodes) == STAGED_NODES
        assert all(t.name == name for name, t in graph.nodes.items())
        assert (graph.x.name, graph.gamma.name, graph.beta.name) == ("x", "gamma", "beta")
    x4, gamma4, beta4, _ = _batch(rng, (2, 4, 2, 2), (4,))
    grouped = groupnorm_graph(x4, gamma4, beta4, 2)
    expected = ("xg", *STAGED_NODES[:6], "xhatg", *STAGED_NODES[6:])
    assert tuple(grouped.nodes) == expected


def test_staged_nodes_constant_is_the_list_in_staged_py(staged_assignments):
    # The module docstring lists the graph as "name = op" lines, and staged_backward assigns the forward
    # nodes by name and the gradients as "d" + name (numbered where a node has several paths).
    documented = re.findall(r"^\s{4}(\w+)\s+= ", staged.__doc__, flags=re.M)
    assert tuple(documented) == STAGED_NODES
    assigned = list(dict.fromkeys(staged_assignments))
    forward = [n for n in assigned if n in STAGED_NODES]
    assert forward == [n for n in STAGED_NODES if n in forward] and len(forward) >= 7
    gradients = {re.sub(r"\d+$", "", n)[1:] for n in assigned if n.startswith("d")}
    assert gradients | {"out"} == set(STAGED_NODES) | {"x", "gamma", "beta"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    graph = sample_graph("batchnorm", rng=np.random.default_rng(0), dtype=dtype)
    assert all(t.dtype == dtype and t.grad.dtype == dtype for t in (*graph.nodes.values(), graph.x, graph.gamma))


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm", "groupnorm"])
def test_sample_graph_has_values_and_gradients_everywhere(kind):
    graph = sample_graph(kind, rng=np.random.default_rng(0))
    for t in (*graph.nodes.values(), graph.x, graph.gamma, graph.beta):
        assert t.grad is not None and t.grad.shape == t.shape and np.all(np.isfinite(t.grad))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x, g: batchnorm_graph(x[0], g, g), "x must be at least 2-D"),
        (lambda x, g: batchnorm_graph(x, g[:2], g), "gamma must have shape (3,) to match the input, got shape (2,)"),
        (lambda x, g: layernorm_graph(x, g, g[:2]), "beta must have shape (3,)"),
        (lambda x, g: batchnorm_graph(x, g, g, eps=0.0), "eps must be > 0, got 0.0"),
        (lambda x, g: groupnorm_graph(x, g, g, 2), "num_groups must divide the number of channels C=3"),
        (lambda x, g: groupnorm_graph(x, g, g, 0), "num_groups must be a positive integer, got 0"),
        (lambda x, g: batchnorm_graph(x, g, g).backward(np.ones((3, 3))), "dout must have shape (4, 3)"),
        (lambda x, g: sample_graph("batchnorms", rng=np.random.default_rng(0)), "kind must be one of"),
        (lambda x, g: sample_graph("layernorm", rng=np.random.default_rng(0), shape=(4,)), "at least 2 positive"),
    ],
)
def test_bad_input_raises_a_clear_error(make, message):
    x, g = np.ones((4, 3)), np.ones(3)
    with pytest.raises(ValueError, match=re.escape(message)):
        make(x, g)
