"""`normlab graph`: draw the computational graph of a normalization, after a forward and a backward pass
on a small random batch, with Graphviz."""

from __future__ import annotations

import sys

NAME = "graph"
HELP = "draw the computational graph of a normalization (values in blue, gradients in red) with Graphviz"


def add_arguments(parser) -> None:
    from normlab.cli._norm_args import add_norm_arguments

    add_norm_arguments(parser)
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="FILE.svg or FILE.png (rendered with Graphviz's dot; FILE.dot is written beside it), "
                             "or FILE.dot for the DOT source only")
    parser.add_argument("--rankdir", choices=("LR", "TB"), default="TB",
                        help="TB: top to bottom, readable when fitted to a page (default); LR: left to right, as drawn by hand, wide")


def run(args) -> int:
    from normlab.autograd.dot import GraphvizNotFoundError, render, to_dot
    from normlab.cli._norm_args import build_sample, describe

    try:
        graph = build_sample(args)
        source = to_dot(graph.out, title=describe(graph), rankdir=args.rankdir)
        written = render(source, args.out)
    except GraphvizNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dot_path = written.with_suffix(".dot")
    print(f"wrote {written}" + ("" if written == dot_path else f" (DOT source: {dot_path})"))
    return 0
