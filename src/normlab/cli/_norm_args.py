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
    parser.add_argument("--shape", type=_shape, default=None, metavar="N,C,...",
                        help="shape of the sample batch x (default 4,3; 2,4,2,2 for groupnorm)")
    parser.add_argument("--groups", type=int, default=2, help="number of groups for groupnorm (default 2)")
    if seed:  # explain prints shapes and formulas only: the values of the batch do not show
        parser.add_argument("--seed", type=int, default=0, help="seed of the sample batch (default 0)")


def default_shape(kind: str) -> tuple[int, ...]:
    return DEFAULT_SHAPE.get(kind, (4, 3))


def sample_builder(args):
    """(rng, shape) -> (the output Tensor of the graph named by args.kind, after a backward pass with an
    upstream gradient drawn from N(0, 1); two lines saying what it is). Raises ValueError naming NAME when
    a function cannot be loaded."""
    import numpy as np

    from normlab.autograd import Tensor
    from normlab.autograd.graphs import sample_graph

    if args.kind in KINDS:
        def build_norm(rng: np.random.Generator, shape: tuple[int, ...]):
            graph = sample_graph(args.kind, rng=rng, shape=shape, num_groups=args.groups)
            return graph.out, describe(graph)

        return build_norm
    function = load_function(args.kind)

    def build(rng: np.random.Generator, shape: tuple[int, ...]):
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

    shape = args.shape or default_shape(args.kind)
    return sample_builder(args)(np.random.default_rng(getattr(args, "seed", 0)), shape)


def describe(graph) -> str:
    """Two lines saying what a sample NormGraph is."""
    from normlab.autograd.graphs import TITLES

    axes = f"axis {graph.stat_axes[0]}" if len(graph.stat_axes) == 1 else f"axes {graph.stat_axes}"
    over = f"{axes} of xg" if graph.kind == "groupnorm" else axes
    return (f"{TITLES[graph.kind]} on x of shape {graph.x.shape}\n"
            f"statistics over {over}, eps {graph.eps:g}; upstream gradient dout ~ N(0, 1)")


# -- `normlab train`: the normalization, its options and its placement ------------------------------------
# One flag per option of normlab.nn.norm_registry (a test holds every option that a command line can give
# covered), with the range argparse checks.
TRAIN_NORM_FLAGS = {
    "groups": ("--groups", {"low": 1}, "G",
               "group: number of groups (default: the largest divisor of the channels not above 32)"),
    "virtual_batch_size": ("--virtual-batch-size", {"low": 1}, "N", "ghost: samples per virtual batch (16)"),
    "rmax": ("--rmax", {"low": 1}, "R", "renorm: the bound on r once relaxed, r in [1/R, R] (3)"),
    "dmax": ("--dmax", {"low": 0}, "D", "renorm: the bound on |d| once relaxed (5)"),
    "warmup_steps": ("--renorm-warmup", {"low": 0}, "STEPS", "renorm: steps of plain batch norm first (5000)"),
    "rmax_full_at": ("--rmax-full-at", {"low": 0}, "STEP", "renorm: the step at which r's bound reaches R (40000)"),
    "dmax_full_at": ("--dmax-full-at", {"low": 0}, "STEP", "renorm: the step at which d's bound reaches D (25000)"),
    "momentum": ("--norm-momentum", {"low": 0, "low_open": True, "high": 1}, "M",
                 "batch, renorm, ghost: weight of each batch in the running statistics (0.1; renorm 0.01)"),
    "eps": ("--norm-eps", {"low": 0, "low_open": True}, "EPS", "every normalization: added to the variance (1e-5)"),
}


def add_train_norm_arguments(group) -> None:
    """--normalization (every name of the registry), --placement, and one flag per normalization option."""
    from normlab.cli._run_args import number
    from normlab.nn.norm_registry import PLACEMENTS, get_normalization, normalization_names

    names = normalization_names()
    group.add_argument("--normalization", choices=names,
                       help="normalization of each hidden layer (default: the model's, batch for fcnet and "
                            "bn-cnn); instance needs a convolutional model")
    group.add_argument("--placement", choices=PLACEMENTS,
                       help="fcnet: the normalization before the nonlinearity (the batch norm paper's, the "
                            "default) or after it")
    for option, (flag, bounds, metavar, text) in TRAIN_NORM_FLAGS.items():
        kind = next(o.type for n in names for o in get_normalization(n).options if o.name == option)
        group.add_argument(flag, dest=f"norm_{option}", type=number(kind, **bounds), metavar=metavar, help=text)


def norm_options_from_args(args, normalization: str | None, model: str, *, default: bool = False) -> dict | None:
    """The norm_options the flags give for `normalization` (the one given, or with default=True the model's
    default; None for a model without one), None when no flag is given. Raises ValueError naming a flag the
    normalization does not take."""
    from normlab.nn.norm_registry import check_norm_options, get_normalization

    given = {option: getattr(args, f"norm_{option}") for option in TRAIN_NORM_FLAGS
             if getattr(args, f"norm_{option}", None) is not None}
    if not given:
        return None
    if normalization is None:
        raise ValueError(f"{' '.join(TRAIN_NORM_FLAGS[o][0] for o in given)}: model {model!r} has no "
                         "normalization to take it")
    takes = get_normalization(normalization).defaults
    wrong = [TRAIN_NORM_FLAGS[o][0] for o in given if o not in takes]
    if wrong:
        accepted = [TRAIN_NORM_FLAGS[o][0] for o in takes if o in TRAIN_NORM_FLAGS]
        chosen = f"--normalization {normalization}" + (f" (model {model!r}'s default)" if default else "")
        raise ValueError(f"{' '.join(wrong)}: not an option of {chosen} (it takes {', '.join(accepted) or 'none'})")
    try:
        check_norm_options(normalization, given)
    except ValueError as e:  # say it with the flags the user typed (rmax_full_at -> --rmax-full-at)
        message = str(e)
        for option, (flag, *_) in TRAIN_NORM_FLAGS.items():
            message = re.sub(rf"\b{option}\b", flag, message)
        raise ValueError(message) from None
    return given


def norm_option_dests() -> tuple[str, ...]:
    """The argparse names of the normalization flags (for `normlab train --resume`, which refuses them)."""
    return tuple(f"norm_{option}" for option in TRAIN_NORM_FLAGS)
