"""`normlab explain`: the backward pass of a normalization step by step, generated from its computational
graph: one line per node, each gradient a local gradient times the upstream gradient."""

from __future__ import annotations

import sys

HELP = "print a normalization's backward pass step by step, generated from its computational graph"


def add_arguments(parser) -> None:
    from normlab.cli._norm_args import add_norm_arguments

    add_norm_arguments(parser, seed=False)


def run(args) -> int:
    from normlab.autograd.steps import explain
    from normlab.cli._norm_args import build_sample

    try:
        out, description = build_sample(args)
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(explain(out, title=description), end="")
    return 0
