"""The named view and `explain`: the steps generated from the graph are the staged backward's steps,
and every text they print computes the numbers the engine computed."""

import re

import numpy as np
import pytest

from normlab.autograd import GraphView, Tensor, sample_graph
from normlab.autograd.steps import explain
from normlab.functional.staged import STAGED_NODES



def staged_gradient_steps(assigned: list[str]) -> list[tuple[str, int]]:
    """The gradients staged_backward computes, as (gradient name, number of paths), in the order each is
    complete: dxmu1 and dxmu2 are the two paths into xmu, summed into dxmu after the second."""
    paths: dict[str, set[str]] = {}
    last: dict[str, int] = {}
    for k, name in enumerate(n for n in assigned if n.startswith("d")):
        base = re.sub(r"\d+$", "", name)
        paths.setdefault(base, set())
        if base != name:
            paths[base].add(name)
        last[base] = k
    return [(name, max(1, len(paths[name]))) for name in sorted(last, key=last.get)]


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
def test_explain_steps_are_the_staged_backward_steps(kind, staged_assignments):
    view = GraphView(sample_graph(kind, rng=np.random.default_rng(0)).out)
    steps = [(s.gradient, len(s.uses)) for s in view.steps if s.uses]  # dout is the seed, not a step
    assert steps == staged_gradient_steps(staged_assignments)
    assert view.steps[0].gradient == "dout" and view.steps[0].formula == "the upstream gradient"


def test_batchnorm_formulas_read_as_the_staged_backward():
    view = GraphView(sample_graph("batchnorm", rng=np.random.default_rng(0)).out)
    formulas = {s.gradient: s.formula for s in view.steps}
    assert formulas["dgamma"] == "sum(xhat * dgammax, axis=0)"
    assert formulas["divar"] == "sum(xmu * dxhat, axis=0)"
    assert formulas["dsqrtvar"] == "-1 / sqrtvar**2 * divar"
    assert formulas["dvar"] == "0.5 / sqrtvar * dsqrtvar"
    assert formulas["dsq"] == "1/4 * dvar"
    assert formulas["dxmu"] == "ivar * dxhat + 2 * xmu * dsq"
    assert formulas["dx"] == "1 * dxmu + 1/4 * dmu"


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm", "groupnorm"])
def test_view_of_a_normalization_has_exactly_the_named_nodes_with_eps_folded_into_sqrtvar(kind, batchnorm_edges):
    graph = sample_graph(kind, rng=np.random.default_rng(0))
    view = GraphView(graph.out)
    assert [n.name for n in view.nodes if n.expression is not None] == list(graph.nodes)
    assert {n.name for n in view.nodes if n.expression is None} == {"x", "gamma", "beta"}
    assert view.node("sqrtvar").expression == "sqrt(var + 1e-05)"
    assert view.node("sqrtvar").inputs == ("var",)
    if kind == "batchnorm":
        assert {(a, b) for a, b, _ in view.edges()} == batchnorm_edges
        assert set(STAGED_NODES) <= {n.name for n in view.nodes}


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm", "groupnorm"])
@pytest.mark.parametrize("shape", [None, "four-d"])
def test_every_printed_expression_and_gradient_computes_the_engines_numbers(kind, shape, texts_of):
    shape = {None: None, "four-d": (2, 4, 3, 2)}[shape]
    graph = sample_graph(kind, rng=np.random.default_rng(5), shape=shape)
    pairs = texts_of(GraphView(graph.out))
    assert set(pairs) >= set(graph.nodes) | {"dx", "dgamma", "dbeta"}
    for key, (from_text, in_graph) in pairs.items():
        np.testing.assert_allclose(from_text, in_graph, rtol=1e-12, atol=1e-12, err_msg=key)


def test_explain_prints_one_line_per_node_with_shapes():
    graph = sample_graph("batchnorm", rng=np.random.default_rng(0))
    text = explain(graph.out, title="Batch norm")
    lines = text.splitlines()
    assert lines[0] == "Batch norm" and text.endswith("\n")
    assert "Inputs: x (4, 3), gamma (3,), beta (3,)" in lines
    assert re.search(r"^  sqrtvar\s+\(1, 3\)\s+= sqrt\(var \+ 1e-05\)$", text, flags=re.M)
    assert re.search(r"^  dxmu\s+\(4, 3\)\s+= ivar \* dxhat \+ 2 \* xmu \* dsq$", text, flags=re.M)
    backward = lines[lines.index(next(l for l in lines if l.startswith("Backward"))) + 2:]
    assert [l.split()[0] for l in backward] == [s.gradient for s in GraphView(graph.out).steps]


def test_unnamed_tensors_are_shown_as_t_numbers_and_duplicate_names_are_made_unique():
    a, b = Tensor(np.ones(2), "x"), Tensor(np.full(2, 2.0), "x")
    u = a * b  # unnamed, used by an unnamed output: a node of its own
    out = u + a
    out.backward()
    view = GraphView(out)
    assert [n.name for n in view.nodes] == ["x", "x_2", "t1", "t2"]
    assert view.node("t1").expression == "x * x_2" and view.node("t2").expression == "t1 + x"
    assert {s.gradient: s.formula for s in view.steps}["dx"] == "1 * dt2 + x_2 * dt1"


def test_a_name_ends_a_step_and_folds_the_unnamed_tensors_made_on_the_way():
    a = Tensor(np.full(3, 2.0), "a")
    y = ((a * 2.0 + 1.0).sqrt() * a).named("y")
    y.backward()
    view = GraphView(y)
    assert [n.name for n in view.nodes] == ["a", "y"]
    assert view.node("y").expression == "sqrt((2 * a) + 1) * a"


def test_constants_are_nodes_without_gradients():
    x = Tensor(np.ones(2), "x")
    y = (x * np.array([2.0, 3.0])).named("y")
    y.backward()
    view = GraphView(y)
    assert [s.gradient for s in view.steps] == ["dy", "dx"]
    assert ("t1", "y", "") in view.edges()


def test_bad_input():
    with pytest.raises(TypeError, match="out must be a Tensor, got ndarray"):
        GraphView(np.ones(2))
    view = GraphView(Tensor(np.ones(2), "x") * 2.0)
    with pytest.raises(KeyError, match="no node named 'mu'"):
        view.node("mu")


def test_a_very_long_unnamed_run_is_cut_into_nodes_instead_of_one_unreadable_expression():
    x = Tensor(np.ones(3), "x")
    y = x
    for _ in range(100):
        y = y * 1.0
    y.named("y").backward()
    view = GraphView(y)
    assert 100 // 9 <= len(view.nodes) - 1 <= 100 // 8 + 1  # at most 8 operations folded into a node
    assert view.steps[-1].gradient == "dx"
