"""The mistakes' walk and the simulation built on it stay equal to normlab's core when no mistake is made,
and every mistake changes what it computes."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.autograd.graphs import batchnorm_graph, groupnorm_graph, layernorm_graph
from normlab.check.cases import build_cases
from normlab.check.families import FAMILIES
from normlab.check.mistakes import CATALOGUE
from normlab.check.simulate import reference, simulate
from normlab.check.walk import BACKWARD_NODES, FLAGS, FORWARD_NODES, walk
from normlab.gradcheck import relative_error


@pytest.mark.parametrize("family", FAMILIES, ids=[f.key for f in FAMILIES])
def test_simulation_without_mistake_equals_the_functional_core(family):
    for case in build_cases(family):
        for expected, simulated in zip(reference(family, case), simulate(family, case), strict=True):
            assert expected.keys() == simulated["outputs"].keys()
            for name, value in expected.items():
                assert relative_error(simulated["outputs"][name], value) < 1e-12, (case.name, name)


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm", "groupnorm"])
def test_walk_nodes_equal_the_autograd_graph(kind):
    rng = np.random.default_rng(3)
    shape = (2, 4, 2, 3) if kind == "groupnorm" else (5, 4)
    x = 3 + 2 * rng.standard_normal(shape)
    c = shape[1]
    gamma, beta, dout = rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(shape)
    if kind == "batchnorm":
        graph = batchnorm_graph(x, gamma, beta)
        nodes = walk(x, gamma[None], beta[None], dout, 1e-5, (0,), (0,))
    elif kind == "layernorm":
        graph = layernorm_graph(x, gamma, beta)
        nodes = walk(x, gamma[None], beta[None], dout, 1e-5, (1,), (0,))
    else:
        graph = groupnorm_graph(x, gamma, beta, 2)
        grouped = (2, 2, 2, 2, 3)
        nodes = walk(x.reshape(grouped), gamma.reshape(1, 2, 2, 1, 1), beta.reshape(1, 2, 2, 1, 1),
                     dout.reshape(grouped), 1e-5, (2, 3, 4), (0, 3, 4))
    _, dgamma, dbeta = graph.backward(dout)
    for name in FORWARD_NODES:
        assert relative_error(nodes[name].reshape(-1), graph.nodes[name].data.reshape(-1)) < 1e-13, name
    for name in ("dxhat", "divar", "dsqrtvar", "dvar", "dsq", "dxmu", "dmu"):
        node = graph.nodes[name[1:]]
        assert relative_error(nodes[name].reshape(-1), np.broadcast_to(node.grad, node.shape).reshape(-1)) < 1e-12
    assert relative_error(nodes["dx"].reshape(shape), graph.x.grad) < 1e-12
    # xmu's two uses: local gradient times upstream, on nodes checked against the graph just above
    assert relative_error(nodes["dxmu1"], nodes["dxhat"] * nodes["ivar"]) < 1e-13
    assert relative_error(nodes["dxmu2"], 2 * nodes["xmu"] * nodes["dsq"]) < 1e-13
    assert relative_error(nodes["dgamma"].reshape(-1), dgamma.reshape(-1)) < 1e-12
    assert relative_error(nodes["dbeta"].reshape(-1), dbeta.reshape(-1)) < 1e-12
    assert set(BACKWARD_NODES) <= set(nodes)


def test_every_flag_changes_the_walk():
    rng = np.random.default_rng(0)
    x, dout = 5 + rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    gamma, beta = rng.uniform(0.5, 2, (1, 3)), rng.standard_normal((1, 3))
    right = walk(x, gamma, beta, dout, 1e-3, (0,), (0,))
    for flag in FLAGS:
        wrong = walk(x, gamma, beta, dout, 1e-3, (0,), (0,), mistakes=frozenset({flag}))
        changed = [n for n in ("out", "dx", "dgamma", "dbeta") if wrong[n].shape != right[n].shape
                   or relative_error(wrong[n], right[n]) > 1e-6]
        assert changed, flag


def test_catalogue_flags_are_walk_flags_and_walk_refuses_unknown_ones():
    assert {f for m in CATALOGUE for f in m.flags} <= FLAGS
    with pytest.raises(ValueError, match="unknown"):
        walk(np.ones((2, 2)), np.ones((1, 2)), np.zeros((1, 2)), None, 1e-5, (0,), (0,),
             mistakes=frozenset({"no_such_mistake"}))
