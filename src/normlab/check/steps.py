"""The first wrong step of a staged forward or backward.

The learner's function's local variables, captured as it returned, are matched to the nodes of the
reference graph: by the usual names (mu, xmu, ..., dxhat, divar, dsqrtvar, ...) and, where the names
differ, by shape and value. Walking the nodes in the order the function computes them, the first node
whose value is wrong is a node whose inputs are right (its inputs come before it): that is the step to
fix, shown with its formula from the autograd graph (what `normlab explain` prints), the inputs it reads,
and the values side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from normlab.check.compare import MATCH, THRESHOLD, pattern_words
from normlab.check.walk import BACKWARD_NODES, FORWARD_NODES
from normlab.gradcheck import relative_error

# The names learners give each node besides its own, lower case without underscores (CS231n's, Kratzert's blog
# post's, and common variants). A variable is matched by name when its normalized name is one of them.
ALIASES = {
    "mu": ("mean", "samplemean", "batchmean", "xmean", "meanx", "avg"),
    "xmu": ("xc", "xcentered", "xcentred", "xminusmu", "xminusmean", "centered", "xm", "diff", "xmmu"),
    "sq": ("xmusq", "sqxmu", "squared", "xmusquared", "xcsq"),
    "var": ("samplevar", "batchvar", "variance", "sigma2", "sigmasq"),
    "sqrtvar": ("std", "samplestd", "sigma", "stddev", "sqrtvareps", "stdeps", "denom"),
    "ivar": ("invstd", "istd", "invvar", "rstd", "invsqrtvar", "isqrtvar", "inv", "invsigma"),
    "xhat": ("xnorm", "xnormalized", "xn", "normalized", "xnormed", "xhatg"),
    "gammax": ("scaled", "gx"),
    "out": ("y", "output"),
    "dxhat": ("dxnorm", "dxnormalized", "dxn", "dnormalized", "dxnormed", "dxhatg"),
    "divar": ("dinvstd", "distd", "drstd", "dinvvar", "dinv", "dinvsqrtvar", "disqrtvar"),
    "dsqrtvar": ("dstd", "dsigma", "dsqrtvareps", "dstdeps", "ddenom"),
    "dvar": ("dsamplevar", "dvariance", "dsigma2", "dsigmasq"),
    "dsq": ("dxmusq", "dsquared", "dxcsq"),
    "dxmu1": ("dxc1", "dxcentered1"),
    "dxmu2": ("dxc2", "dxcentered2"),
    "dxmu": ("dxc", "dxcentered"),
    "dmu": ("dmean", "dsamplemean"),
}
# What each node is computed from (its forward inputs, or for a gradient the upstream gradients and the
# forward values its local gradient reads).
INPUTS = {
    "mu": ("x",), "xmu": ("x", "mu"), "sq": ("xmu",), "var": ("sq",), "sqrtvar": ("var",), "ivar": ("sqrtvar",),
    "xhat": ("xmu", "ivar"), "gammax": ("gamma", "xhat"), "out": ("gammax", "beta"),
    "dbeta": ("dout",), "dgamma": ("dout", "xhat"), "dxhat": ("dout", "gamma"), "divar": ("dxhat", "xmu"),
    "dxmu1": ("dxhat", "ivar"), "dsqrtvar": ("divar", "sqrtvar"), "dvar": ("dsqrtvar", "sqrtvar"),
    "dsq": ("dvar",), "dxmu2": ("dsq", "xmu"), "dxmu": ("dxmu1", "dxmu2"), "dx1": ("dxmu1", "dxmu2"),
    "dmu": ("dxmu1", "dxmu2"), "dx2": ("dmu",), "dx": ("dx1", "dx2"),
}


GIVEN = ("x", "gamma", "beta", "dout")  # the function's inputs: matched by name, never the step to fix


@dataclass
class NodeMatch:
    """A reference node and the learner's variable holding it."""

    node: str
    variable: str | None  # None: no variable holds it (by name or value)
    right: bool | None  # None when not found
    error: float | None


@dataclass
class FirstWrongStep:
    """The step to fix."""

    node: str
    variable: str
    formula: str  # from the reference graph, e.g. "-1 / sqrtvar**2 * divar"
    shape: tuple[int, ...]  # the reference node's shape
    inputs: list[NodeMatch]
    error: float | None
    expected: list[float]  # the first few values, side by side
    got: list[float]
    got_shape: tuple[int, ...]
    diagnoses: list[str] = field(default_factory=list)
    mistakes: list[str] = field(default_factory=list)


def normalized(name: str) -> str:
    """"x_hat" -> "xhat"; a cache entry "cache['x_hat']" -> "xhat" (its key is its name)."""
    key = re.search(r"\[['\"](.+)['\"]\]$", name)
    return re.sub(r"[^a-z0-9]", "", (key.group(1) if key else name).lower())


def node_error(value: np.ndarray, reference: np.ndarray) -> float | None:
    """Relative error of a variable against a node, allowing a dropped or kept dimension (same values in
    order) and a value the code broadcasts (dsq of shape (1, D) for an (N, D) node); None when neither."""
    with np.errstate(all="ignore"):
        if value.size == reference.size:
            return relative_error(value.reshape(reference.shape), reference)
        try:
            return relative_error(np.broadcast_to(value, reference.shape), reference)
        except ValueError:
            return None


def match_nodes(variables: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                order: tuple[str, ...]) -> dict[str, NodeMatch]:
    """Find each node of `order` among the variables: by name first, then by value among the others."""
    matches, claimed = {}, set()
    for node in order:
        names = (node, *ALIASES.get(node, ()))
        named = [v for v in variables if normalized(v) in names and v not in claimed]
        named.sort(key=lambda v: names.index(normalized(v)))
        if named:
            errors = [(node_error(variables[v], reference[node]), v) for v in named]
            errors.sort(key=lambda e: np.inf if e[0] is None or np.isnan(e[0]) else e[0])
            error, variable = errors[0] if errors[0][0] is not None else (None, named[0])
            right = error is not None and error <= THRESHOLD
            matches[node] = NodeMatch(node, variable, right, error)
            claimed.add(variable)
    for node in order:
        if node in matches:
            continue
        for variable, value in variables.items():
            if variable in claimed or value.shape != reference[node].shape or value.size < 2:
                continue
            error = node_error(value, reference[node])
            if error is not None and error <= THRESHOLD:
                matches[node] = NodeMatch(node, variable, True, error)
                claimed.add(variable)
                break
        else:
            matches[node] = NodeMatch(node, None, None, None)
    return matches


def first_wrong_step(variables: dict[str, np.ndarray], reference: dict[str, np.ndarray], backward: bool,
                     formulas: dict[str, str], mutants: dict[str, dict[str, np.ndarray]],
                     mistake_words: dict[str, str], group: int,
                     skip_forward_nodes: bool = False) -> tuple[FirstWrongStep | None, dict[str, NodeMatch]]:
    """The first node, in the order the function computes them, whose value is wrong.

    Inputs:
    - variables: the function's local arrays as it returned.
    - reference: every node of the reference graph (`simulate`'s nodes, main case).
    - backward: match the gradient nodes (after the forward values the backward recomputes or unpacks).
    - formulas: {node: its formula}; mutants: {mistake key: its nodes}; mistake_words: {key: its diagnosis}.
    - group: M, for naming a ratio of 1/M; skip_forward_nodes: look for the first wrong gradient only.

    Returns (the first wrong step or None, every match).
    """
    order = GIVEN + FORWARD_NODES + (BACKWARD_NODES if backward else ())
    order = tuple(n for n in order if n in reference)
    matches = match_nodes(variables, reference, order)
    for node in order:
        match = matches[node]
        if node in GIVEN or (skip_forward_nodes and node in FORWARD_NODES):
            continue
        if match.right is not False:
            continue
        value, ref = variables[match.variable], reference[node]
        step = FirstWrongStep(node, match.variable, formulas.get(node, ""), ref.shape,
                              [matches.get(i, NodeMatch(i, None, None, None)) for i in INPUTS[node]],
                              match.error, _head(ref), _head(value), value.shape)
        for key, nodes in mutants.items():
            if node in nodes and (node_error(nodes[node], ref) or 0.0) > MATCH:
                e = node_error(value, nodes[node])
                if e is not None and e <= MATCH:
                    step.mistakes.append(key)
                    step.diagnoses.append(mistake_words[key])
        if not step.mistakes and value.shape == ref.shape and np.all(np.isfinite(value)):
            step.diagnoses.extend(pattern_words(node, value, ref, group))
        elif value.size != ref.size:
            step.diagnoses.append(f"{match.variable} has shape {value.shape} where the node has shape {ref.shape}")
        return step, matches
    return None, matches


def _head(a: np.ndarray, count: int = 4) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)[:count]]
