"""`normlab graph`: draw the computational graph of a normalization (or of any function built with
`normlab.autograd`) after a forward and a backward pass on a small random batch: a static picture
(SVG, PNG, with Graphviz) or an interactive page (HTML) that steps through the forward and backward."""

from __future__ import annotations

import sys

from normlab.cli._norm_args import _shape, add_norm_arguments, build_sample, sample_builder, sample_shape

HELP = ("draw the computational graph of a normalization (values in blue, gradients in red) with Graphviz, "
        "or write an interactive page (--out FILE.html)")
# The shapes and seeds an HTML page offers besides --shape and --seed: one small enough to read in full,
# one large enough for heat maps, three seeds; the batch norm page is about 125 kB.
PAGE_SHAPES = {"batchnorm": ((4, 3), (16, 5)), "layernorm": ((4, 3), (16, 5)),
               "groupnorm": ((2, 4, 2, 2), (4, 6, 2, 2))}
PAGE_SEEDS = (0, 1, 2)


def add_arguments(parser) -> None:
    add_norm_arguments(parser)
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="FILE.html: an interactive page (self-contained; opens from disk); FILE.svg or "
                             "FILE.png (rendered with Graphviz's dot; FILE.dot is written beside it), or FILE.dot "
                             "for the DOT source only")
    parser.add_argument("--rankdir", choices=("LR", "TB"), default="TB",
                        help="TB: top to bottom, readable when fitted to a page (default); LR: left to right, as "
                             "drawn by hand, wide (the HTML page is always TB)")
    parser.add_argument("--page-shapes", type=_shape, nargs="+", metavar="N,C,...",
                        help="HTML: the other shapes the page offers, after --shape (default 4,3 16,5; 2,4,2,2 "
                             "4,6,2,2 for groupnorm)")
    parser.add_argument("--page-seeds", type=int, nargs="+", metavar="SEED",
                        help="HTML: the other seeds the page offers, after --seed (default 0 1 2)")


def run(args) -> int:
    from normlab.autograd.dot import GraphvizNotFoundError, render, to_dot

    try:
        if args.out.lower().endswith((".html", ".htm")):
            written = _write_page(args)
            print(f"wrote {written} ({written.stat().st_size} bytes; open it in a browser)")
            return 0
        out, description = build_sample(args)
        source = to_dot(out, title=description, rankdir=args.rankdir)
        written = render(source, args.out)
    except (ValueError, TypeError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1 if isinstance(error, GraphvizNotFoundError) else 2
    dot_path = written.with_suffix(".dot")
    print(f"wrote {written}" + ("" if written == dot_path else f" (DOT source: {dot_path})"))
    return 0


def _write_page(args):
    from normlab.autograd.page import graph_page

    build = sample_builder(args)
    shapes = [sample_shape(args), *(args.page_shapes or PAGE_SHAPES.get(args.kind, ()))]  # nargs="+": never []
    seeds = [args.seed, *(args.page_seeds or PAGE_SEEDS)]
    title = build_sample(args)[1].split(" on ")[0]

    def build_described(rng, shape):
        out, description = build(rng, shape)
        return out, description.replace("\n", "; ")

    page = graph_page(build_described, shapes, seeds, title=title,
                      subtitle="; choose another shape or seed above (precomputed by normlab)")
    return page.save(args.out)
