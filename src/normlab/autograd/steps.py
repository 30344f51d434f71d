"""The named view of a graph: the nodes a picture draws and the steps `normlab explain` prints.

A name marks the end of a step: every named tensor and every leaf is a node, and the unnamed tensors
made on the way to a named one (used only there) are folded into it, so `sqrtvar = sqrt(var + 1e-05)`
is one node, as in the staged backward, rather than two. Other unnamed tensors are shown as t1, t2, ...

The backward steps are generated from the operations' own texts (see `normlab.autograd.tensor`): the
gradient of a node is, summed over its uses, the local gradient of the use times the upstream gradient,
summed over the axes the forward broadcast. For batch norm:

    dxhat  (4, 3) = gamma * dgammax
    divar  (1, 3) = sum(xmu * dxhat, axis=0)
    dxmu   (4, 3) = ivar * dxhat + 2 * xmu * dsq
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from normlab.autograd.tensor import Tensor

_ATOM = re.compile(r"^-?[\w.]+(\.m?T)?$")
_IDENTITY = "1 * {g}"
_MAX_FOLD_DEPTH = 8


@dataclass(frozen=True)
class Node:
    """One node of the picture: a named tensor, a leaf, or an unnamed tensor that could not be folded."""

    name: str
    tensor: Tensor
    expression: str | None  # the forward, in other nodes' names: "xmu * ivar"; None for a leaf
    inputs: tuple[str, ...]  # the nodes it is computed from, in operand order (after folding)


@dataclass(frozen=True)
class Use:
    """One way a node's gradient arrives: from `consumer`, as `term` (local gradient * upstream).

    - local: the local gradient d consumer / d node as text ("ivar", "2 * xmu", "1/4"), when it is a
      factor of the upstream gradient (elementwise operations and reductions); None otherwise (@, reshape).
    - path: (operation, operand index) from the node's first use up to the consumer; longer than one
      where unnamed steps are folded into the consumer (var -> var + eps -> sqrtvar).
    """

    consumer: str
    term: str
    local: str | None = None
    path: tuple[tuple[Tensor, int], ...] = ()

    @property
    def upstream(self) -> str:
        return "d" + self.consumer


@dataclass(frozen=True)
class Step:
    """The backward of one node: its gradient, `d<name> = <sum of the terms of its uses>`."""

    node: Node
    uses: tuple[Use, ...]  # empty for the output, whose gradient is the upstream gradient itself

    @property
    def gradient(self) -> str:
        return "d" + self.node.name

    @property
    def formula(self) -> str:
        return " + ".join(u.term for u in self.uses) if self.uses else "the upstream gradient"


class GraphView:
    """The nodes of the graph ending at `out`, in forward order, and the backward steps.

    Inputs:
    - out: the output tensor; the graph is everything it was computed from.

    Attributes:
    - nodes: list of Node, each after the nodes it is computed from.
    - steps: list of Step for the nodes that receive a gradient, in the order the gradients are complete
      (a leaf as soon as all its uses are done, as a person working backward would write them).
    """

    def __init__(self, out: Tensor):
        if not isinstance(out, Tensor):
            raise TypeError(f"out must be a Tensor, got {type(out).__name__}")
        self.out = out
        order = out.topological_order()
        self._uses: dict[int, list[tuple[Tensor, int]]] = {id(t): [] for t in order}
        for t in order:
            for i, p in enumerate(t.parents):
                self._uses[id(p)].append((t, i))
        self._folded: dict[int, int] = {}  # id -> how many folded steps away from its named node
        self._cut: set[int] = set()
        for t in reversed(order):
            depth = self._fold_depth(t)
            if depth is not None:
                self._folded[id(t)] = depth
        self._shown = self._leaves_before_first_use([t for t in order if id(t) not in self._folded])
        self._names = _unique_names(self._shown)
        self.nodes = [self._node(t) for t in self._shown]
        self._by_name = {n.name: n for n in self.nodes}
        backward_order = self._backward_order()
        # A node's terms in the order its uses' gradients are complete: dxmu = ivar * dxhat + 2 * xmu * dsq.
        self._done = {self._names[id(t)]: k for k, t in enumerate(backward_order)}
        self.steps = [self._step(t) for t in backward_order if t.requires_grad]

    def _repr_svg_(self) -> str | None:
        """Jupyter shows the graph inline (values and gradients, as `normlab graph` draws it); None, and so
        the text repr, when Graphviz is not installed."""
        from normlab.autograd.dot import GraphvizNotFoundError, render_svg, to_dot

        try:
            return render_svg(to_dot(self, rankdir="TB"))
        except GraphvizNotFoundError:
            return None

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no node named {name!r}; the nodes are {list(self._by_name)}") from None

    def edges(self) -> list[tuple[str, str, str]]:
        """(from, to, gradient term) for every use of a node by a node: the arrows of the picture, with
        the gradient that flows back along each ("" where the source receives no gradient)."""
        return [(self._names[id(t)], consumer, term) for t in self._shown for consumer, term in self._terms(t)]

    # ----------------------------------------------------------------------------------------------

    def _fold_depth(self, t: Tensor) -> int | None:
        """1 + the consumer's depth when t is an unnamed intermediate used once, by a named or folded
        tensor: part of one named step, like the `var + eps` in `sqrtvar = (var + eps).sqrt()`. None when
        t is a node of its own; so is every _MAX_FOLD_DEPTH-th of a long run (it reads better in pieces)."""
        if t is self.out or t.name is not None or not t.parents or len(self._uses[id(t)]) != 1:
            return None
        (consumer, _), = self._uses[id(t)]
        if consumer.name is not None or id(consumer) in self._cut:
            return 1
        if id(consumer) not in self._folded:
            return None
        depth = self._folded[id(consumer)] + 1
        if depth > _MAX_FOLD_DEPTH:
            self._cut.add(id(t))  # a node of its own, and the end of the next step up
            return None
        return depth

    def _shown_use(self, t: Tensor) -> Tensor:
        """t if it is a node, else the node it is folded into (a folded tensor has exactly one use)."""
        while id(t) in self._folded:
            t = self._uses[id(t)][0][0]
        return t

    def _leaves_before_first_use(self, order: list[Tensor]) -> list[Tensor]:
        """The same tensors, each leaf moved to just before its first use: x, gamma, beta read in the order
        the forward meets them. Still a topological order."""
        leaves = [t for t in order if not t.parents and self._uses[id(t)]]
        result = [t for t in order if t.parents or not self._uses[id(t)]]
        position = {id(t): k for k, t in enumerate(result)}
        for leaf in leaves:
            first_use = min((self._shown_use(c) for c, _ in self._uses[id(leaf)]), key=lambda c: position[id(c)])
            result.insert(result.index(first_use), leaf)
        return result

    def _text(self, t: Tensor) -> str:
        """How t appears in another node's expression: its name, or its own expression when folded."""
        return self._names[id(t)] if id(t) in self._names else self._filled(t.expression, t)

    def _filled(self, template: str, op: Tensor, **texts: str) -> str:
        """`template` of operation `op` with its operands' texts for {a} and {b}, and `texts` for the rest."""
        return _fill(template, {"a": self._text(op.parents[0]), "b": self._text(op.parents[-1]), **texts})

    def _node(self, t: Tensor) -> Node:
        if t.expression is None:
            return Node(self._names[id(t)], t, None, ())
        inputs = tuple(self._names[id(p)] for p in self._shown_input_tensors(t))
        return Node(self._names[id(t)], t, self._filled(t.expression, t), inputs)

    def _terms(self, t: Tensor) -> list[tuple[str, str]]:
        """(consumer node, gradient term) for every use of t, following folded consumers down to the
        node that is shown."""
        if not t.requires_grad:
            return [(self._names[id(self._shown_use(c))], "") for c, _ in self._uses[id(t)]]
        return [self._term(c, i) for c, i in self._uses[id(t)]]

    def _path(self, consumer: Tensor, index: int) -> tuple[tuple[Tensor, int], ...]:
        """(operation, operand index) from operand `index` of `consumer` up to the shown node."""
        path = [(consumer, index)]
        while id(path[-1][0]) not in self._names:
            path.append(self._uses[id(path[-1][0])][0])
        return tuple(path)

    def _local(self, path: tuple[tuple[Tensor, int], ...]) -> str | None:
        """The local gradient along `path` as text, when it is a factor of the upstream gradient: one
        operation with a factor, or a chain of elementwise ones. None otherwise."""
        if any(op.local_factors[i] is None for op, i in path):
            return None
        if len(path) > 1 and not all(op.elementwise for op, _ in path):
            return None
        factors = []
        for op, i in path:
            template = op.local_gradients[i]
            if not template.endswith(" * {g}") or template.count("{g}") != 1:
                return None
            factor = self._filled(template[:-len(" * {g}")], op, out=self._text(op))
            if factor != "1":
                factors.append(factor)
        if len(factors) > 1:
            factors = [f if _is_atom(f) else f"({f})" for f in factors]
        return " * ".join(factors) or "1"

    def _term(self, consumer: Tensor, index: int) -> tuple[str, str]:
        """The gradient reaching operand `index` of `consumer`, as text, and the shown node it comes from."""
        if id(consumer) in self._names:
            shown, upstream = self._names[id(consumer)], "d" + self._names[id(consumer)]
        else:
            (next_consumer, next_index), = self._uses[id(consumer)]
            shown, upstream = self._term(next_consumer, next_index)
        template = consumer.local_gradients[index]
        if template == _IDENTITY and not _ATOM.match(upstream):
            term = upstream  # "1 * (0.5 / sqrtvar * dsqrtvar)" says nothing more
        else:
            term = self._filled(template, consumer, out=self._text(consumer), g=upstream)
        axes = consumer.broadcast_axes[index]
        if axes:
            term = f"sum({term}, axis={axes[0] if len(axes) == 1 else axes})"
        return shown, term

    def _step(self, t: Tensor) -> Step:
        if t is self.out:
            return Step(self._by_name[self._names[id(t)]], ())
        paths = [self._path(op, index) for op, index in self._uses[id(t)]]
        uses = [Use(consumer, term, self._local(path), path) for (consumer, term), path in zip(self._terms(t), paths)]
        return Step(self._by_name[self._names[id(t)]], tuple(sorted(uses, key=lambda use: self._done[use.consumer])))

    def _backward_order(self) -> list[Tensor]:
        """Reverse topological order of the shown nodes, each as soon as all its uses are done; among the
        ready, leaves first, then the node latest in the forward."""
        position = {id(t): k for k, t in enumerate(self._shown)}
        pending = {id(t): len({id(self._shown_use(c)) for c, _ in self._uses[id(t)]}) for t in self._shown}
        inputs = {id(t): self._shown_input_tensors(t) for t in self._shown}
        ready, order = [self.out], []
        while ready:
            ready.sort(key=lambda t: (not t.parents, position[id(t)]))
            t = ready.pop()
            order.append(t)
            for p in {id(p): p for p in inputs[id(t)]}.values():
                pending[id(p)] -= 1
                if pending[id(p)] == 0:
                    ready.append(p)
        return order

    def _shown_input_tensors(self, t: Tensor) -> list[Tensor]:
        result = []
        for p in t.parents:
            result.extend([p] if id(p) in self._names else self._shown_input_tensors(p))
        return result


def _unique_names(tensors: list[Tensor]) -> dict[int, str]:
    """By id: each tensor's name, or t1, t2, ... (skipping names taken) if it has none; a repeated name
    becomes name_2, name_3, ..."""
    taken = {t.name for t in tensors if t.name is not None}
    unnamed = (name for name in (f"t{k}" for k in itertools.count(1)) if name not in taken)
    names: dict[int, str] = {}
    for t in tensors:
        base = name = t.name if t.name is not None else next(unnamed)
        k = 1
        while name in names.values():
            k += 1
            name = f"{base}_{k}"
        names[id(t)] = name
    return names


def _fill(template: str, texts: dict[str, str]) -> str:
    """Put the texts into the template's {a} {b} {out} {g}, in parentheses where a compound text would
    otherwise change the meaning: `{a}**2` with a = "var + eps" is "(var + eps)**2"."""

    def replace(match: re.Match) -> str:
        key, start, end = match.group(1), match.start(), match.end()
        text = texts[key]
        enclosed = template[start - 1:start] == "(" and template[end:end + 1] in (")", ",")
        return text if enclosed or _is_atom(text) else f"({text})"

    return re.sub(r"\{(a|b|out|g)\}", replace, template)


def _is_atom(text: str) -> bool:
    """A name, a number, or one call spanning the whole text, like sum(xmu * dxhat, axis=0)."""
    if _ATOM.match(text):
        return True
    call = re.match(r"^[A-Za-z_]\w*\(", text)
    if not call or not text.endswith(")"):
        return False
    depth = 0
    for k, ch in enumerate(text[call.end() - 1:], start=call.end() - 1):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return k == len(text) - 1
    return False


def explain(out: Tensor | GraphView, *, title: str | None = None) -> str:
    """The graph ending at `out` as text: the forward node by node, then the backward node by node, one
    line each, with shapes. What `normlab explain` prints.

    Returns the text, ending in a newline.
    """
    view = out if isinstance(out, GraphView) else GraphView(out)
    width = max(len(s.gradient) for s in view.steps) if view.steps else 1
    width = max(width, *(len(n.name) for n in view.nodes))
    shape_width = max(len(str(n.tensor.shape)) for n in view.nodes)

    def row(name: str, shape: tuple[int, ...], text: str) -> str:
        return f"  {name:<{width}}  {shape!s:<{shape_width}}  = {text}"

    lines = [title, ""] if title else []
    inputs = [n for n in view.nodes if n.expression is None]
    lines.append("Inputs: " + ", ".join(f"{n.name} {n.tensor.shape}" for n in inputs))
    lines.append("")
    lines.append("Forward, node by node:")
    lines.extend(row(n.name, n.tensor.shape, n.expression) for n in view.nodes if n.expression is not None)
    lines.append("")
    lines.append("Backward, node by node: each gradient is a local gradient times the upstream gradient, summed")
    lines.append("over the node's uses; sum(..., axis=k) undoes a broadcast of the forward pass.")
    lines.extend(row(s.gradient, s.node.tensor.shape, s.formula) for s in view.steps)
    return "\n".join(lines) + "\n"
