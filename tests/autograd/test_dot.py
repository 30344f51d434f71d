"""Graph export: DOT source, a real SVG and PNG rendered by Graphviz, and a clear message without it."""

import shutil
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from normlab.autograd import Tensor, sample_graph
from normlab.autograd.dot import (
    BACKWARD_COLOR,
    FORWARD_COLOR,
    GraphvizNotFoundError,
    render,
    summarize,
    to_dot,
)
from normlab.functional.staged import STAGED_NODES

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")


@pytest.fixture(scope="module")
def batchnorm():
    return sample_graph("batchnorm", rng=np.random.default_rng(0))


def _svg_graph(path):
    """{node title: its text} and {(from, to)} of a Graphviz SVG."""
    root = ET.parse(path).getroot()
    nodes, edges = {}, set()
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        if g.get("class") == "node":
            nodes[title.text] = [(t.text or "", t.get("fill")) for t in g.iter(f"{SVG}text")]
        elif g.get("class") == "edge":
            edges.add(tuple(title.text.split("->")))
    return nodes, edges


def test_dot_source_has_a_node_per_intermediate_with_op_shape_value_and_gradient(batchnorm):
    source = to_dot(batchnorm.out, title="Batch norm")
    assert source.startswith('digraph "out" {') and "rankdir=LR" in source
    for name in ("x", "gamma", "beta", *STAGED_NODES):
        assert f'  "{name}" [label=<' in source
    assert "<B>sqrtvar</B>" in source and "= sqrt(var + 1e-05)" in source and "(1, 3)" in source
    assert f'<FONT COLOR="{FORWARD_COLOR}">[' in source and f'<FONT COLOR="{BACKWARD_COLOR}">dxhat: mean' in source
    assert '"xmu" -> "xhat" [label=<ivar * dxhat>];' in source
    assert "rankdir=TB" in to_dot(batchnorm.out, rankdir="TB")


def test_a_graph_without_backward_has_no_gradient_lines():
    x = Tensor(np.arange(4.0).reshape(2, 2), "x")
    y = (x * 2.0).named("y")
    source = to_dot(y)
    assert BACKWARD_COLOR not in source and '  "x" -> "y";' in source and f'<FONT COLOR="{FORWARD_COLOR}">' in source


@needs_dot
def test_rendered_svg_has_every_named_node_and_edge_in_blue_and_red(batchnorm, batchnorm_edges, tmp_path):
    path = render(to_dot(batchnorm.out, title="Batch norm"), tmp_path / "bn.svg")
    assert path == tmp_path / "bn.svg" and (tmp_path / "bn.dot").exists()
    nodes, edges = _svg_graph(path)
    assert set(nodes) == {"x", "gamma", "beta", *STAGED_NODES}
    assert edges == batchnorm_edges
    lines = [text for text, _ in nodes["sqrtvar"] if text.strip()]
    assert lines[:3] == ["sqrtvar", "(1, 3)", "= sqrt(var + 1e-05)"]
    colors = {fill.lower() for _, fill in nodes["xhat"] if fill}
    assert FORWARD_COLOR in colors and BACKWARD_COLOR in colors
    assert any(text.startswith("dxhat: mean") for text, _ in nodes["xhat"])


@needs_dot
@pytest.mark.parametrize("kind", ["layernorm", "groupnorm"])
def test_rendered_svg_of_other_normalizations(kind, tmp_path):
    graph = sample_graph(kind, rng=np.random.default_rng(0))
    nodes, edges = _svg_graph(render(to_dot(graph.out), tmp_path / f"{kind}.svg"))
    assert set(nodes) == {"x", "gamma", "beta", *graph.nodes}
    assert ("xmu", "sq") in edges and ("var", "sqrtvar") in edges


@needs_dot
def test_rendered_png_is_a_png(batchnorm, tmp_path):
    path = render(to_dot(batchnorm.out, rankdir="TB"), tmp_path / "bn.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert height > width > 300  # top to bottom: taller than wide


def test_missing_dot_writes_the_dot_file_and_says_how_to_install_graphviz(batchnorm, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(GraphvizNotFoundError) as error:
        render(to_dot(batchnorm.out), tmp_path / "graphs" / "bn.svg")
    message = str(error.value)
    assert "sudo apt-get install graphviz" in message and "brew install graphviz" in message
    assert f"dot -Tsvg {tmp_path / 'graphs' / 'bn.dot'} -o {tmp_path / 'graphs' / 'bn.svg'}" in message
    assert (tmp_path / "graphs" / "bn.dot").read_text().startswith('digraph "out"')
    assert not (tmp_path / "graphs" / "bn.svg").exists()


def test_dot_suffix_writes_only_the_source_and_needs_no_graphviz(batchnorm, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    path = render(to_dot(batchnorm.out), tmp_path / "bn.dot")
    assert path.read_text() == to_dot(batchnorm.out) and list(tmp_path.iterdir()) == [path]


@needs_dot
def test_graphviz_errors_are_reported(tmp_path):
    with pytest.raises(RuntimeError, match="dot failed"):
        render("digraph {", tmp_path / "broken.svg")


def test_bad_arguments(batchnorm, tmp_path):
    with pytest.raises(ValueError, match=r"path must end in one of \.svg, \.png, \.dot, got '.*bn\.pdf'"):
        render("digraph {}", tmp_path / "bn.pdf")
    with pytest.raises(ValueError, match=r"rankdir must be one of \('LR', 'TB'\), got 'RL'"):
        to_dot(batchnorm.out, rankdir="RL")


def test_summaries_are_short():
    assert summarize(np.array([1.23456, -0.5, 2e-17])) == "[1.2, -0.5, 0]"
    assert summarize(np.arange(12.0)) == "mean 5.5, std 3.5"
    assert summarize(np.float64(3.0)) == "[3]"
    assert summarize(np.array([1.0, -1.0, 1.0, -1.0 + 1e-7], dtype=np.float32)) == "mean 0, std 1"
    assert summarize(np.array([1.0, -1.0, 1.0, -1.0 + 1e-7])) == "mean 2.5e-08, std 1"
