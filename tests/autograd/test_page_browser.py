"""The interactive page in a real browser: Debian's Chromium, headless, driven by Selenium, the page
opened from disk (file://) with background networking off. Skipped with the reason when Chromium,
chromedriver or selenium is missing; an error instead where NORMLAB_REQUIRE_BROWSER=1 (CI)."""

import io
import os
import shutil

import numpy as np
import pytest
from browser import REQUIRE_ENV, headless_chromium, missing_reason

from normlab.autograd import GraphView, sample_graph
from normlab.autograd.page import graph_page

SHAPES, SEEDS = [(4, 3), (16, 5)], [0, 1]


def _require_browser():
    reason = missing_reason() or (None if shutil.which("dot") else "Graphviz dot is not installed")
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires the browser tests to run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def driver():
    _require_browser()
    with headless_chromium() as d:
        yield d


def _build(kind):
    return lambda rng, shape: sample_graph(kind, rng=rng, shape=shape).out


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    _require_browser()
    path = graph_page(_build("batchnorm"), SHAPES, SEEDS, title="Batch norm").save(
        tmp_path_factory.mktemp("page") / "batchnorm.html")
    return path.as_uri()


def _open(driver, url):
    driver.get(url)
    driver.get_log("browser")  # start from an empty log
    driver.get(url)


def _click(driver, button):
    driver.find_element("id", button).click()


def _current(driver):
    body = driver.find_element("tag name", "body")
    return body.get_attribute("data-phase"), body.get_attribute("data-node")


def _walk(driver, button, clicks):
    """Click the button `clicks` times in the page (one round trip) and return where each click led,
    starting from where the page was."""
    return [tuple(step) for step in driver.execute_script("""
        const button = document.getElementById(arguments[0]), body = document.body, seen = [];
        const here = () => [body.getAttribute("data-phase"), body.getAttribute("data-node")];
        seen.push(here());
        for (let k = 0; k < arguments[1]; k++) { button.click(); seen.push(here()); }
        return seen;""", button, clicks)]


def _expected_order(view):
    return [("forward", n.name) for n in view.nodes] + [("backward", s.node.name) for s in view.steps]


def _shown_array(driver, role, within=None):
    """The numbers of the array block with data-role=role, read from the page's text."""
    scope = within or driver
    block = scope.find_element("css selector", f'.array[data-role="{role}"]')
    cells = block.find_elements("css selector", "table.values td")
    shape = tuple(int(n) for n in block.get_attribute("data-shape").split(",") if n)
    return np.array([float(c.text) for c in cells]), shape


def _select(driver, select_id, value):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def test_the_page_loads_from_disk_without_console_errors_or_network(driver, page_url):
    _open(driver, page_url)
    assert driver.title == "Batch norm"
    assert driver.find_element("id", "counter").text == "step 1 of 24"
    assert len(driver.find_elements("css selector", "#graph svg g.node")) == 12
    # nothing fetched: the only resource is the page itself
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    for _ in range(23):
        _click(driver, "next")
    _select(driver, "shape", "16,5")
    _select(driver, "seed", "1")
    errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm", "groupnorm"])
def test_stepping_forward_and_back_reaches_every_node_in_order(driver, kind, tmp_path):
    shape = (2, 4, 2, 2) if kind == "groupnorm" else (4, 3)
    url = graph_page(_build(kind), [shape], [0]).save(tmp_path / "page.html").as_uri()
    _open(driver, url)
    expected = _expected_order(GraphView(_build(kind)(np.random.default_rng(0), shape)))
    seen = _walk(driver, "next", len(expected) - 1)
    assert seen == expected
    assert driver.find_element("id", "next").get_attribute("disabled") == "true"
    assert _walk(driver, "prev", len(expected) - 1) == expected[::-1]
    # the current node is the one highlighted in the graph, and only it
    highlighted = driver.find_elements("css selector", "#graph g.node.current")
    assert [g.get_attribute("id") for g in highlighted] == [f"node-{expected[0][1]}"]


def test_the_keyboard_steps_too(driver, page_url):
    from selenium.webdriver.common.keys import Keys

    _open(driver, page_url)
    body = driver.find_element("tag name", "body")
    body.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert _current(driver) == ("forward", "xmu")
    body.send_keys(Keys.END)
    assert _current(driver) == ("backward", "x")
    body.send_keys(Keys.ARROW_LEFT)
    assert _current(driver) == ("backward", "mu")
    body.send_keys(Keys.HOME)
    assert _current(driver) == ("forward", "x")


def _go_to(driver, phase, name):
    _click(driver, "first")
    seen = _walk(driver, "next", 40)
    _click(driver, "first")
    _walk(driver, "next", seen.index((phase, name)))


def test_the_values_shown_are_normlabs(driver, page_url):
    _open(driver, page_url)
    view = GraphView(_build("batchnorm")(np.random.default_rng(0), (4, 3)))
    for name in ("x", "mu", "xhat", "out"):
        _go_to(driver, "forward", name)
        shown, shape = _shown_array(driver, "value")
        value = view.node(name).tensor.data
        assert shape == value.shape
        np.testing.assert_allclose(shown, value.reshape(-1), rtol=6e-4, atol=1e-12)
    # backward of xmu: per use, local gradient x upstream gradient = product, and their sum
    _go_to(driver, "backward", "xmu")
    uses = driver.find_elements("css selector", "section.use")
    assert [u.get_attribute("data-consumer") for u in uses] == ["xhat", "sq"]
    xmu, ivar = view.node("xmu").tensor.data, view.node("ivar").tensor.data
    dxhat, dsq = view.node("xhat").tensor.grad, view.node("sq").tensor.grad
    for use, local, upstream in ((uses[0], ivar, dxhat), (uses[1], 2 * xmu, dsq)):
        for role, expected in (("local", local), ("upstream", upstream), ("product", local * upstream)):
            shown, _ = _shown_array(driver, role, within=use)
            np.testing.assert_allclose(shown, expected.reshape(-1), rtol=6e-4, atol=1e-12)
    shown, _ = _shown_array(driver, "gradient")
    np.testing.assert_allclose(shown, view.node("xmu").tensor.grad.reshape(-1), rtol=6e-4, atol=1e-12)
    # mu was broadcast: its share is summed over axis 0
    _go_to(driver, "backward", "mu")
    use = driver.find_element("css selector", "section.use")
    shown, shape = _shown_array(driver, "summed", within=use)
    assert shape == (1, 3)
    np.testing.assert_allclose(shown, view.node("mu").tensor.grad.reshape(-1), rtol=6e-4, atol=1e-12)


def test_another_shape_and_seed_show_their_own_values_as_a_summary_and_heat_map(driver, page_url):
    _open(driver, page_url)
    _select(driver, "shape", "16,5")
    _select(driver, "seed", "1")
    _go_to(driver, "forward", "xmu")
    block = driver.find_element("css selector", '.array[data-role="value"]')
    xmu = GraphView(_build("batchnorm")(np.random.default_rng(1), (16, 5))).node("xmu").tensor.data
    for stat, expected in (("mean", xmu.mean()), ("std", xmu.std()), ("min", xmu.min()), ("max", xmu.max())):
        shown = float(block.find_element("css selector", f'[data-stat="{stat}"] .number').text)
        assert shown == pytest.approx(expected, rel=6e-4, abs=1e-6), stat
    assert len(block.find_elements("css selector", "svg.heatmap rect")) == 80


def _png_pixels(data):
    """A PNG as an (height, width, 3) array of 0..255 ints."""
    from matplotlib.image import imread

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.rint(imread(io.BytesIO(data), format="png")[..., :3] * 255).astype(int)


def test_a_screenshot_shows_the_graph_and_the_panel(driver, page_url):
    _open(driver, page_url)
    _go_to(driver, "backward", "xmu")
    pixels = _png_pixels(driver.get_screenshot_as_png())
    height, width, _ = pixels.shape
    assert width == 1400 and height > 600

    def colors(x0, x1):
        return {tuple(c) for c in pixels[::2, x0:x1:2].reshape(-1, 3)}

    red, blue, orange = (0xC0, 0x28, 0x2D), (0x1A, 0x4F, 0x9C), (0xE0, 0x8A, 0x00)
    graph, panel = colors(0, 480), colors(480, 1400)
    assert len(graph) > 20 and len(panel) > 20  # drawn, not blank
    # the backward's red in the panel, the forward's blue and the highlight's orange (xmu) in the graph
    assert any(_near(c, red) for c in panel) and any(_near(c, blue) for c in graph)
    assert any(_near(c, orange) for c in graph)


def _near(color, target, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(color, target))
