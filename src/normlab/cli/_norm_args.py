"""Arguments shared by `normlab graph` and `normlab explain`: which normalization, on what batch."""

from __future__ import annotations

import argparse

# normlab.autograd.graphs.KINDS, spelled out so that `normlab --help` does not import NumPy (a test holds
# them equal).
KINDS = ("batchnorm", "layernorm", "groupnorm")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes separated by commas, like 4,3; got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected at least 2 positive sizes (N, C, ...), got {text!r}")
    return shape


def add_norm_arguments(parser, *, seed: bool = True) -> None:
    parser.add_argument("kind", choices=KINDS, help="the normalization")
    parser.add_argument("--shape", type=_shape, default=None, metavar="N,C,...",
                        help="shape of the sample batch x (default 4,3; 2,4,2,2 for groupnorm)")
    parser.add_argument("--groups", type=int, default=2, help="number of groups for groupnorm (default 2)")
    if seed:  # explain prints shapes and formulas only: the values of the batch do not show
        parser.add_argument("--seed", type=int, default=0, help="seed of the sample batch (default 0)")


def build_sample(args):
    import numpy as np

    from normlab.autograd.graphs import sample_graph

    rng = np.random.default_rng(getattr(args, "seed", 0))
    return sample_graph(args.kind, rng=rng, shape=args.shape, num_groups=args.groups)


def describe(graph) -> str:
    """Two lines saying what the sample graph is."""
    from normlab.autograd.graphs import TITLES

    axes = f"axis {graph.stat_axes[0]}" if len(graph.stat_axes) == 1 else f"axes {graph.stat_axes}"
    over = f"{axes} of xg" if graph.kind == "groupnorm" else axes
    return (f"{TITLES[graph.kind]} on x of shape {graph.x.shape}\n"
            f"statistics over {over}, eps {graph.eps:g}; upstream gradient dout ~ N(0, 1)")
