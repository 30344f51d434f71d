"""The interactive page as written by Python: self-contained, its numbers those of normlab's graphs for
every shape and seed offered, its layout Graphviz's with an id per node and arrow. The page in a real
browser is tested in test_page_browser.py."""

import json
import re
import shutil

import numpy as np
import pytest

from normlab.autograd import GraphView, Tensor, sample_graph
from normlab.autograd.dot import GraphvizNotFoundError
from normlab.autograd.page import MAX_SAMPLES, GraphPage, decode_array, encode_array, graph_page

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")


def _batchnorm(rng, shape):
    return sample_graph("batchnorm", rng=rng, shape=shape).out


def page_data(html: str) -> dict:
    payload = re.search(r'<script type="application/json" id="normlab-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(payload)


@pytest.fixture(scope="module")
def page():
    if shutil.which("dot") is None:
        pytest.skip("Graphviz dot is not installed")
    return graph_page(_batchnorm, [(4, 3), (16, 5)], [0, 1], title="Batch norm")


def test_the_page_is_one_self_contained_file(page):
    html = page.html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<link" not in html and "@import" not in html
    # nothing is loaded from anywhere: no src or href attributes at all (the SVG namespaces are names)
    assert not re.search(r"\s(src|href|xlink:href)\s*=", html)
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert 50_000 < len(html.encode()) < 200_000


def test_every_shape_and_seed_is_precomputed_with_normlabs_numbers(page):
    data = page_data(page.html)
    assert data["shapes"] == ["4,3", "16,5"] and data["seeds"] == [0, 1]
    assert [(s["shape"], s["seed"]) for s in data["samples"]] == [("4,3", 0), ("4,3", 1), ("16,5", 0), ("16,5", 1)]
    for sample in data["samples"]:
        shape = tuple(int(n) for n in sample["shape"].split(","))
        view = GraphView(_batchnorm(np.random.default_rng(sample["seed"]), shape))
        assert [n["name"] for n in sample["forward"]] == [n.name for n in view.nodes]
        for entry in sample["forward"]:
            np.testing.assert_allclose(decode_array(entry["value"]), view.node(entry["name"]).tensor.data,
                                       rtol=1e-6, atol=1e-6)
        assert ["d" + b["name"] for b in sample["backward"]] == [s.gradient for s in view.steps]
        for entry in sample["backward"]:
            grad = view.node(entry["name"]).tensor.grad
            np.testing.assert_allclose(decode_array(entry["gradient"]), grad, rtol=1e-6, atol=1e-6)
            if entry["uses"]:
                total = sum(decode_array(u["summed"] if u["summed"] else u["product"]) for u in entry["uses"])
                np.testing.assert_allclose(total, grad, rtol=1e-5, atol=1e-6)


def test_the_layout_has_an_svg_id_for_every_node_and_arrow(page):
    data = page_data(page.html)
    assert len(data["layouts"]) == 2  # one per shape: the labels give the shapes; seeds share it
    view = GraphView(_batchnorm(np.random.default_rng(0), (4, 3)))
    layout = data["layouts"][data["samples"][0]["layout"]]
    assert layout["svg"].startswith("<svg") and 'viewBox="' in layout["svg"]
    ids = set(re.findall(r'<g id="([^"]+)" class="(?:node|edge)"', layout["svg"]))
    ids = {i.replace("&#45;", "-") for i in ids}
    assert ids == {f"node-{n.name}" for n in view.nodes} | {f"edge-{k}" for k in range(len(view.edges()))}
    assert layout["edges"] == [[a, b] for a, b, _ in view.edges()]


def test_a_backward_step_stores_local_upstream_product_and_the_sum_over_broadcast_axes(page):
    sample = page_data(page.html)["samples"][0]
    steps = {b["name"]: b for b in sample["backward"]}
    uses = steps["xmu"]["uses"]
    assert [(u["consumer"], u["local_text"], u["upstream"]) for u in uses] == [("xhat", "ivar", "dxhat"),
                                                                              ("sq", "2 * xmu", "dsq")]
    (through_xmu,) = steps["mu"]["uses"]
    assert through_xmu["sum_axes"] == [0] and decode_array(through_xmu["summed"]).shape == (1, 3)
    assert steps["out"]["uses"] == []


def test_values_zero_up_to_rounding_are_stored_as_zero():
    a = np.array([1.0, -1.0, 3e-17])
    np.testing.assert_array_equal(decode_array(encode_array(a)), [1.0, -1.0, 0.0])
    assert decode_array(encode_array(np.float64(2.5))).shape == ()


@needs_dot
def test_a_function_built_with_the_engine_gets_a_page():
    def build(rng, shape):
        x = Tensor(rng.standard_normal(shape), "x")
        w = Tensor(rng.standard_normal((shape[1], 2)), "w")
        return ((x @ w).named("h").exp().sum()).named("loss")

    data = page_data(graph_page(build, [(3, 2)], [7]).html)
    (sample,) = data["samples"]
    assert [n["name"] for n in sample["forward"]] == ["x", "w", "h", "loss"]
    assert [b["name"] for b in sample["backward"]] == ["loss", "h", "w", "x"]
    assert sample["backward"][-1]["uses"][0]["local"] is None  # x @ w: no elementwise factor


@needs_dot
def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"shapes and seeds must not be empty, got shapes=\[\], seeds=\[0\]"):
        graph_page(_batchnorm, [], [0])
    with pytest.raises(ValueError, match=f"at most {MAX_SAMPLES} samples"):
        graph_page(_batchnorm, [(4, 3), (5, 3), (6, 3)], range(6))
    with pytest.raises(TypeError, match=r"build must return a Tensor \(or a Tensor and a description\), got ndarray"):
        graph_page(lambda rng, shape: np.zeros(shape), [(4, 3)], [0])
    with pytest.raises(ValueError, match=r"too large for the page: at most 4096 values"):
        graph_page(_batchnorm, [(100, 50)], [0])
    with pytest.raises(ValueError, match=r"path must end in \.html, got 'page\.svg'"):
        GraphPage("<html></html>", "t").save("page.svg")


def test_without_graphviz_the_page_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(GraphvizNotFoundError, match="sudo apt-get install graphviz"):
        graph_page(_batchnorm, [(4, 3)], [0])


def test_jupyter_displays_the_page_in_an_iframe_and_graphs_as_svg(monkeypatch):
    iframe = GraphPage('<p class="x">a & b</p>', "Batch norm")._repr_html_()
    assert iframe.startswith('<iframe title="Batch norm" srcdoc="&lt;p class=&quot;x&quot;&gt;a &amp; b&lt;/p&gt;"')
    graph = sample_graph("batchnorm", rng=np.random.default_rng(0))
    if shutil.which("dot"):
        svg = graph._repr_svg_()
        assert "<svg" in svg and "dxhat: mean" in svg and GraphView(graph.out)._repr_svg_() == svg
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    assert graph._repr_svg_() is None  # Jupyter then shows the text repr
