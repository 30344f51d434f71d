"""The formula of every node of the staged graph, from the autograd graph (the lines `normlab explain`
prints), including the two halves of dxmu (dxmu1 from xhat, dxmu2 from sq) and of dx (dx1 from xmu, dx2
from mu) that CS231n's staged backward names."""

from __future__ import annotations

import numpy as np

from normlab.autograd.graphs import batchnorm_graph, groupnorm_graph, layernorm_graph
from normlab.autograd.steps import GraphView


def graph_formulas(kind: str, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, groups: int,
                   constant: bool = False) -> dict[str, str]:
    """{node: formula} for the normalization `kind` on an input like x (training mode; empty for test mode,
    whose statistics are constants)."""
    if constant:
        return {}
    c = x.shape[1]
    gamma, beta = gamma.reshape(-1), beta.reshape(-1)
    if kind in ("batchnorm", "spatial_batchnorm"):
        graph = batchnorm_graph(x, gamma.reshape(c), beta.reshape(c), eps=eps)
    elif kind == "layernorm":
        graph = layernorm_graph(x, gamma.reshape(x.shape[1:]), beta.reshape(x.shape[1:]), eps=eps)
    else:
        graph = groupnorm_graph(x, gamma.reshape(c), beta.reshape(c), groups, eps=eps)
    view = GraphView(graph.out)
    formulas = {n.name: n.expression for n in view.nodes if n.expression}
    steps = {s.gradient: s for s in view.steps}
    for s in view.steps:
        formulas[s.gradient] = s.formula
    dxmu = steps["dxmu"].uses
    formulas["dxmu1"], formulas["dxmu2"] = dxmu[0].term, dxmu[1].term
    dx = steps["dxg" if "dxg" in steps else "dx"]
    terms = {u.consumer: u.term for u in dx.uses}
    formulas["dx1"], formulas["dx2"] = terms.get("xmu", ""), terms.get("mu", "")
    formulas["dx1"] = f"{formulas['dx1']}  (= dxmu1 + dxmu2)"
    formulas["dx"] = "dx1 + dx2" if "dxg" not in steps else f"reshape(dx1 + dx2, {x.shape})"
    if "xhatg" in formulas:
        formulas["xhat"] = formulas.pop("xhatg")
    return formulas
