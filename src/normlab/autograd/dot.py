"""The computational graph as a picture: DOT source, rendered with Graphviz's `dot`.

One node per node of the named view (`normlab.autograd.steps`): its name and forward expression, its
shape, and, once forward and backward have run, a summary of its value (forward, blue) and of its
gradient (backward, red). The arrows run forward, from input to use; each carries, in red, the gradient
that flows back along it (local gradient times upstream gradient), so the picture reads as the
hand-drawn graph of the staged backward.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

import numpy as np

from normlab.autograd.steps import GraphView, Node
from normlab.autograd.tensor import Tensor

FORWARD_COLOR = "#1a4f9c"  # blue: values
BACKWARD_COLOR = "#c0282d"  # red: gradients
FORMATS = ("svg", "png", "dot")
RANKDIRS = ("LR", "TB")
_INSTALL = ("Install Graphviz:\n  Debian/Ubuntu:  sudo apt-get install graphviz\n  macOS:          brew install "
            "graphviz\n  conda:          conda install -c conda-forge graphviz\n")
INSTALL_HINT = ("Graphviz's `dot` program was not found on PATH, so the graph could not be rendered. " + _INSTALL
                + "then render the DOT file yourself with:  dot -T{fmt} {dot_path} -o {path}")
SVG_INSTALL_HINT = ("Graphviz's `dot` program was not found on PATH; normlab uses it to lay out the graph. " + _INSTALL
                    + "or write the DOT source alone (--out FILE.dot), which needs no Graphviz.")
_FONT = "Helvetica,Arial,sans-serif"
_LEFT_BREAK = '<BR ALIGN="LEFT"/>'  # ends a left-aligned line of an HTML label


class GraphvizNotFoundError(RuntimeError):
    """`dot` is not installed. The message says how to install it; the .dot file was still written."""


def to_dot(graph: Tensor | GraphView, *, title: str | None = None, rankdir: str = "LR", values: bool = True,
           ids: bool = False) -> str:
    """DOT source of the graph ending at `graph` (a Tensor, or a GraphView of one).

    Inputs:
    - graph: the output tensor (or its view), after a forward and, for the red lines, a backward pass.
    - title: drawn above the graph (may have several lines).
    - rankdir: "LR" draws the forward left to right, as the graph is drawn by hand; "TB" top to bottom,
      tall and narrow, for a page or a phone.
    - values: False leaves out the values and gradients (name, shape and operation only): the layout the
      interactive page fills in.
    - ids: give every node the SVG id "node-NAME" and the k-th arrow of `GraphView.edges()` "edge-k", for
      a script to find.

    Returns the DOT text. Node IDs are the node names; edges run from input to use.
    """
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    view = graph if isinstance(graph, GraphView) else GraphView(graph)
    title_lines = title.splitlines() if title else []
    heading = [f"<B>{_escape(line)}</B>" if k == 0 else _escape(line) for k, line in enumerate(title_lines)]
    has_gradients = values and any(n.tensor.grad is not None for n in view.nodes)
    if has_gradients:
        heading.append(f'<FONT POINT-SIZE="11" COLOR="{FORWARD_COLOR}">blue: values (forward)</FONT>')
        heading.append(f'<FONT POINT-SIZE="11" COLOR="{BACKWARD_COLOR}">red: gradients (backward); on an arrow, '
                       f"the gradient flowing back along it{_LEFT_BREAK}(local gradient * upstream gradient)</FONT>")
    lines = [
        f"digraph {_quote(view.out.name or 'graph')} {{",
        f'  graph [rankdir={rankdir}, fontname="{_FONT}", fontsize=14, nodesep=0.2, ranksep=0.3, '
        f'bgcolor="white", pad=0.2, labelloc=t, labeljust=l'
        + (f", label=<{_LEFT_BREAK.join(heading)}{_LEFT_BREAK} {_LEFT_BREAK}>" if heading else "") + "];",
        f'  node [shape=box, style="rounded,filled", fillcolor="#f6f6f6", color="#9a9a9a", '
        f'fontname="{_FONT}", fontsize=11, margin="0.08,0.03"];',
        f'  edge [fontname="{_FONT}", fontsize=9, color="#7a7a7a", arrowsize=0.7'
        + (f', fontcolor="{BACKWARD_COLOR}"];' if has_gradients else "];"),
    ]
    for node in view.nodes:
        node_id = f", id={_quote('node-' + node.name)}" if ids else ""
        lines.append(f"  {_quote(node.name)} [{_node_attributes(node, node.tensor is view.out, values)}{node_id}];")
    for k, (source, target, term) in enumerate(view.edges()):
        attributes = [f"label=<{_escape(term)}>"] if term and has_gradients else []
        if ids:
            attributes.append(f'id="edge-{k}"')
        lines.append(f"  {_quote(source)} -> {_quote(target)}" + (f" [{', '.join(attributes)}]" if attributes else "")
                     + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_attributes(node: Node, is_output: bool, values: bool = True) -> str:
    t = node.tensor
    dims = "scalar" if t.ndim == 0 else str(t.shape)
    rows = [f'<B>{_escape(node.name)}</B> <FONT POINT-SIZE="10" COLOR="#555555">{dims}</FONT>']
    if node.expression is not None:
        rows.append(f'<FONT POINT-SIZE="11">= {_escape(node.expression)}</FONT>')
    if values:
        rows.append(f'<FONT COLOR="{FORWARD_COLOR}">{_escape(summarize(t.data))}</FONT>')
    if values and t.grad is not None:
        rows.append(f'<FONT COLOR="{BACKWARD_COLOR}">d{_escape(node.name)}: {_escape(summarize(t.grad))}</FONT>')
    table = "".join(f"<TR><TD>{row}</TD></TR>" for row in rows)
    label = f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{table}</TABLE>>'
    if node.expression is None:  # an input
        return f'label={label}, fillcolor="#e8eef8", color="{FORWARD_COLOR}"'
    if is_output:
        return f'label={label}, penwidth=2, color="#333333"'
    return f"label={label}"


def summarize(a: np.ndarray) -> str:
    """A short summary of an array: its values when there are at most three, else mean and std. Values
    that are zero up to rounding in the array's dtype show as 0 (dx of batch norm has mean 0, not 3e-17)."""
    a = np.asarray(a)
    rounding = 64 * np.finfo(a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64).eps
    a = a.astype(np.float64)
    tiny = rounding * float(np.max(np.abs(a), initial=0.0))

    def short(v: float) -> str:
        return "0" if abs(v) <= tiny else f"{v:.2g}"

    if a.size <= 3:
        return "[" + ", ".join(short(v) for v in a.reshape(-1)) + "]"
    return f"mean {short(a.mean())}, std {short(a.std())}"


def render_svg(source: str) -> str:
    """Lay out the DOT `source` with Graphviz and return the SVG text (what Jupyter displays and the
    interactive page inlines).

    Raises GraphvizNotFoundError when `dot` is not installed; RuntimeError with Graphviz's message when
    it fails.
    """
    return _run_dot(["-Tsvg"], SVG_INSTALL_HINT, source)


def render(source: str, path: str | Path) -> Path:
    """Write the DOT `source` and render it with Graphviz to `path` (.svg or .png; .dot writes only the
    source). The DOT source always goes to `path` with the suffix .dot.

    Returns the path written. Raises GraphvizNotFoundError, after writing the .dot file, when `dot` is
    not installed; RuntimeError with Graphviz's message when rendering fails.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"path must end in one of {', '.join('.' + f for f in FORMATS)}, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    dot_path = path.with_suffix(".dot")
    dot_path.write_text(source, encoding="utf-8")
    if fmt == "dot":
        return dot_path
    hint = INSTALL_HINT.format(fmt=fmt, dot_path=dot_path, path=path)
    dpi = ["-Gdpi=150"] if fmt == "png" else []  # sharp on a high-resolution screen, still a few hundred kB
    _run_dot([*dpi, f"-T{fmt}", str(dot_path), "-o", str(path)], hint, doing=f" rendering {dot_path}")
    return path


def _run_dot(args: list[str], missing: str, source: str | None = None, doing: str = "") -> str:
    """`dot` run with `args` on `source`: its output. GraphvizNotFoundError(missing) without Graphviz."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFoundError(missing)
    result = subprocess.run([dot, *args], input=source, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dot failed (exit {result.returncode}){doing}: {result.stderr.strip()}")
    return result.stdout


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
