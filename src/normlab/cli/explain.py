"""`normlab explain`: the backward pass of a normalization step by step, generated from its computational
graph: one line per node, each gradient a local gradient times the upstream gradient."""

from __future__ import annotations

from normlab.cli._norm_args import add_norm_arguments, build_sample
from normlab.cli._run_args import fail

HELP = "print a normalization's backward pass step by step, generated from its computational graph"


def add_arguments(parser) -> None:
    add_norm_arguments(parser, seed=False)


def run(args) -> int:
    from normlab.autograd.steps import explain

    try:
        out, description = build_sample(args)
    except (ValueError, TypeError) as error:
        return fail(None, error)
    print(explain(out, title=description), end="")
    return 0
