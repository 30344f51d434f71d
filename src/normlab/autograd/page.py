"""The computational graph as one interactive HTML page: step through the forward, then the backward.

`normlab graph batchnorm --out page.html` writes it. The page is one file that works opened from disk
(file://) with no network: the styles, the script, the data and the pictures are inside it.

- Layout: Graphviz's `dot` lays out the graph (`dot -Tsvg`, as for the static picture) and the SVG is
  inlined; a small hand-written script (`page.js`, vanilla JavaScript) makes it interactive. No JavaScript
  library to vendor or keep up to date, and the page shows the same layout as `normlab graph --out
  FILE.svg`. Without Graphviz the page cannot be made, and the error says how to install it.
- Values: every number on the page is computed here by normlab (`normlab.autograd.trace`), for a few
  shapes and seeds chosen when the page is written, and stored in the page as float32 (base64). The
  page computes nothing; changing the shape or seed switches to another precomputed sample.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from normlab.autograd.dot import render_svg, to_dot
from normlab.autograd.steps import GraphView
from normlab.autograd.tensor import Tensor
from normlab.autograd.trace import backward_values, forward_values

Shape = tuple[int, ...]
# build(rng, shape) -> the output tensor of the graph on a batch of that shape, drawn from rng (or the
# tensor and a line saying what it is, shown above the graph). When it has not run backward, the page runs
# it with an upstream gradient drawn from N(0, 1) by the same rng.
Build = Callable[[np.random.Generator, Shape], Tensor]
DEFAULT_SEEDS = (0, 1, 2)
MAX_SAMPLES = 16  # shapes x seeds: each sample adds its numbers to the page
MAX_ELEMENTS = 4096  # per array: a page for learners, not a dump


@dataclass(frozen=True, repr=False)
class GraphPage:
    """An interactive page: `html` is the whole file. Displays inline in Jupyter (in an iframe)."""

    html: str
    title: str

    def __repr__(self) -> str:
        return f"GraphPage(title={self.title!r}, {len(self.html.encode())} bytes)"

    def save(self, path: str | Path) -> Path:
        """Write the page to `path` (.html) and return the path."""
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"path must end in .html, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        return (f'<iframe title="{html.escape(self.title)}" srcdoc="{html.escape(self.html, quote=True)}" '
                'style="width: 100%; height: 720px; border: 1px solid #ddd"></iframe>')


def graph_page(build: Build, shapes: Sequence[Shape], seeds: Sequence[int] = DEFAULT_SEEDS, *,
               title: str = "Computational graph", subtitle: str = "") -> GraphPage:
    """Make the interactive page of the graph that `build` makes, for every shape and seed.

    Inputs:
    - build: (rng, shape) -> output Tensor, or (Tensor, description) (see `Build`); the graph must have
      the same nodes for every shape (the page steps through them in one order).
    - shapes: the shapes offered in the page, the first shown first.
    - seeds: the seeds offered, the first shown first.
    - title: the page's heading; subtitle: a line after each sample's description.

    Returns a GraphPage. Raises ValueError for an empty or too long list of shapes or seeds, or graphs
    whose nodes differ between shapes; GraphvizNotFoundError when Graphviz is not installed.
    """
    shapes = list(dict.fromkeys(tuple(int(n) for n in s) for s in shapes))
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not shapes or not seeds:
        raise ValueError(f"shapes and seeds must not be empty, got shapes={shapes}, seeds={seeds}")
    if len(shapes) * len(seeds) > MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES} samples (shapes x seeds) fit in a page, got {len(shapes)} shapes "
                         f"x {len(seeds)} seeds")
    layouts: dict[str, dict] = {}  # DOT source -> its layout, in order of first use
    samples = []
    for shape, seed in itertools.product(shapes, seeds):
        rng = np.random.default_rng(seed)
        out = build(rng, shape)
        description = f"x of shape {shape}, seed {seed}"
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], str):
            out, description = out
        if not isinstance(out, Tensor):
            raise TypeError(f"build must return a Tensor (or a Tensor and a description), got {type(out).__name__}")
        if out.grad is None:
            out.backward(rng.standard_normal(out.shape).astype(out.dtype))
        view = GraphView(out)
        source = to_dot(view, rankdir="TB", values=False, ids=True)
        if source not in layouts:
            layouts[source] = {"svg": _inline_svg(render_svg(source)), "edges": [[a, b] for a, b, _ in view.edges()]}
        samples.append(sample_data(view, shape, seed, list(layouts).index(source), description))
    order = [[n["name"] for n in s["forward"]] + ["d" + b["name"] for b in s["backward"]] for s in samples]
    if any(o != order[0] for o in order):
        raise ValueError("the graph must have the same nodes in the same order for every shape and seed")
    data = {"title": title, "subtitle": subtitle, "shapes": [_shape_key(s) for s in shapes], "seeds": seeds,
            "layouts": list(layouts.values()), "samples": samples}
    return GraphPage(page_html(data), title)


def sample_data(view: GraphView, shape: Shape, seed: int, layout: int, description: str = "") -> dict:
    """One sample's steps and numbers, as the page's script reads them."""
    forward = []
    for node, value in forward_values(view):
        forward.append({"name": node.name, "expression": node.expression, "inputs": list(node.inputs),
                        "constant": not node.tensor.requires_grad, "value": encode_array(value)})
    backward = []
    for b in backward_values(view):
        uses = []
        for u in b.uses:
            uses.append({"consumer": u.use.consumer, "term": u.use.term, "local_text": u.use.local,
                         "local": None if u.local is None else encode_array(u.local), "upstream": u.use.upstream,
                         "product": encode_array(u.product), "sum_axes": list(u.sum_axes),
                         "summed": encode_array(u.summed) if u.sum_axes else None})
        backward.append({"name": b.step.node.name, "formula": b.step.formula, "gradient": encode_array(b.gradient),
                         "uses": uses})
    return {"shape": _shape_key(shape), "seed": seed, "layout": layout, "description": description,
            "forward": forward, "backward": backward}


def encode_array(a: np.ndarray) -> dict:
    """{"shape": [...], "b64": float32 little-endian bytes in base64}. Values that are zero up to rounding
    in the array's dtype (64 ulps of its largest magnitude) become 0: dx of batch norm sums to 0 over the
    batch, not to 3e-17."""
    a = np.asarray(a)
    if a.size > MAX_ELEMENTS:
        raise ValueError(f"an array of shape {a.shape} ({a.size} values) is too large for the page: at most "
                         f"{MAX_ELEMENTS} values per node; choose a smaller shape")
    eps = np.finfo(a.dtype).eps if np.issubdtype(a.dtype, np.floating) else np.finfo(np.float64).eps
    values = a.astype(np.float64)
    tiny = 64 * eps * float(np.max(np.abs(values), initial=0.0))
    values = np.where(np.abs(values) <= tiny, 0.0, values)
    raw = values.astype("<f4").tobytes()
    return {"shape": list(a.shape), "b64": base64.b64encode(raw).decode("ascii")}


def decode_array(encoded: dict) -> np.ndarray:
    """The inverse of encode_array (as float32)."""
    return np.frombuffer(base64.b64decode(encoded["b64"]), dtype="<f4").reshape(encoded["shape"])


def page_html(data: dict) -> str:
    """The page: styles, data and script inline."""
    package = resources.files("normlab.autograd")
    style = package.joinpath("page.css").read_text(encoding="utf-8")
    script = package.joinpath("page.js").read_text(encoding="utf-8")
    # "</" would end the script element early; JSON reads "<\/" as "</".
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(data["title"])
    subtitle = html.escape(data["subtitle"])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{style}</style>
</head>
<body>
<header>
  <div class="heading"><h1>{title}</h1><p class="subtitle"><span id="description"></span>{subtitle}</p></div>
  <div class="controls">
    <label>shape <select id="shape" title="shape of the input x"></select></label>
    <label>seed <select id="seed" title="seed of the random input and upstream gradient"></select></label>
    <button id="first" title="first step (Home)">&#xAB; first</button>
    <button id="prev" title="previous step (left arrow)">&#x25C0; back</button>
    <button id="next" title="next step (right arrow or space)">next &#x25B6;</button>
    <button id="last" title="last step (End)">last &#xBB;</button>
    <span id="counter" aria-live="polite"></span>
  </div>
</header>
<main>
  <div id="graph" aria-label="computational graph"></div>
  <section id="panel" aria-live="polite"></section>
</main>
<footer>Keys: &#x2192; or space next, &#x2190; back, Home / End. Click a node to jump to it.
Values in blue (forward), gradients in red (backward). Computed by normlab; nothing is computed in the page.</footer>
<script type="application/json" id="normlab-data">{payload}</script>
<script>
{script}</script>
</body>
</html>
"""


def _inline_svg(svg: str) -> str:
    """Graphviz's SVG without its XML prolog, doctype and comments, sized by the page (viewBox kept)."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    # Fit the panel's width, but never larger than Graphviz drew it (points; a CSS pixel is 3/4 point).
    width = re.match(r'^<svg width="([\d.]+)pt" height="[^"]*"', svg)
    limit = f' style="max-width: {float(width.group(1)) * 4 / 3:.0f}px"' if width else ""
    svg = re.sub(r'^<svg width="[^"]*" height="[^"]*"', "<svg" + limit, svg)
    return re.sub(r"\n\s*\n", "\n", svg)


def _shape_key(shape: Shape) -> str:
    return ",".join(str(n) for n in shape)
