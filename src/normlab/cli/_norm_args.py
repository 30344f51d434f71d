"""Arguments shared by `normlab graph` and `normlab explain`: which graph, on what batch.

The graph is a normalization (batchnorm, layernorm, groupnorm) or any function built with
`normlab.autograd`, named MODULE:FUNCTION, called as FUNCTION(rng, shape) -> the output Tensor.
"""

from __future__ import annotations

import argparse
import re

# normlab.autograd.graphs.KINDS, spelled out so that `normlab --help` does not import NumPy (a test holds
# them equal).
KINDS = ("batchnorm", "layernorm", "groupnorm")
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
DEFAULT_SHAPE = {"groupnorm": (2, 4, 2, 2)}  # else (4, 3)


def _kind(text: str) -> str:
    if text in KINDS or _FUNCTION.match(text):
        return text
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(KINDS)} or MODULE:FUNCTION (a function built "
                                     f"with normlab.autograd), got {text!r}")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes separated by commas, like 4,3; got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected at least 2 positive sizes (N, C, ...), got {text!r}")
    return shape


def add_norm_arguments(parser, *, seed: bool = True) -> None:
    parser.add_argument("kind", type=_kind, metavar="NAME",
                        help=f"the graph: {', '.join(KINDS)}, or MODULE:FUNCTION, a function (rng, shape) -> Tensor "
                             "built with normlab.autograd")
    parser.add_argument("--shape", type=_shape, metavar="N,C,...",
                        help="shape of the sample batch x (default 4,3; 2,4,2,2 for groupnorm)")
    parser.add_argument("--groups", type=int, default=2, help="number of groups for groupnorm (default 2)")
    if seed:  # explain prints shapes and formulas only: the values of the batch do not show
        parser.add_argument("--seed", type=int, default=0, help="seed of the sample batch (default 0)")


def sample_shape(args) -> tuple[int, ...]:
    return args.shape or DEFAULT_SHAPE.get(args.kind, (4, 3))


def sample_builder(args):
    """(rng, shape) -> (the output Tensor of the graph named by args.kind, after a backward pass with an
    upstream gradient drawn from N(0, 1); two lines saying what it is). Raises ValueError naming NAME when
    a function cannot be loaded."""
    import numpy as np

    from normlab.autograd import Tensor
    from normlab.autograd.graphs import sample_graph

    function = None if args.kind in KINDS else load_function(args.kind)

    def build(rng: np.random.Generator, shape: tuple[int, ...]):
        if function is None:
            graph = sample_graph(args.kind, rng=rng, shape=shape, num_groups=args.groups)
            return graph.out, describe(graph)
        try:
            out = function(rng, shape)
        except Exception as error:  # the user's code: say whose it is and keep its message
            raise ValueError(f"NAME {args.kind}(rng, shape={shape}) failed: {type(error).__name__}: {error}") from error
        if not isinstance(out, Tensor):
            raise TypeError(f"NAME {args.kind} must return a normlab.autograd.Tensor, got {type(out).__name__}")
        out.backward(rng.standard_normal(out.shape).astype(out.dtype))
        return out, f"{args.kind} on a batch of shape {shape}\nupstream gradient d{out.name or 'out'} ~ N(0, 1)"

    return build


def load_function(spec: str):
    """The function named MODULE:FUNCTION."""
    import importlib

    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"NAME {spec}: cannot import module {module_name!r} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"NAME {spec}: module {module_name!r} has no function {function_name!r}")
    return function


def build_sample(args):
    """The output Tensor of the sample graph (after forward and backward) and two lines saying what it is."""
    import numpy as np

    return sample_builder(args)(np.random.default_rng(getattr(args, "seed", 0)), sample_shape(args))


def describe(graph) -> str:
    """Two lines saying what a sample NormGraph is."""
    from normlab.autograd.graphs import TITLES

    axes = f"axis {graph.stat_axes[0]}" if len(graph.stat_axes) == 1 else f"axes {graph.stat_axes}"
    over = f"{axes} of xg" if graph.kind == "groupnorm" else axes
    return (f"{TITLES[graph.kind]} on x of shape {graph.x.shape}\n"
            f"statistics over {over}, eps {graph.eps:g}; upstream gradient dout ~ N(0, 1)")

