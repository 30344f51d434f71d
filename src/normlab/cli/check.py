"""`normlab check FILE.py`: a learner's own normalization layers checked against normlab's core."""

from __future__ import annotations

import math

from normlab.cli._run_args import fail

HELP = ("check your own batch norm / layer norm / spatial batch norm / group norm (CS231n's layers.py or "
        "normlab's signatures): which output is wrong, the known mistake, the first wrong step")


def add_arguments(parser) -> None:
    parser.description = (
        "Finds batchnorm_forward, batchnorm_backward, batchnorm_backward_alt, layernorm_forward/backward, "
        "spatial_batchnorm_forward/backward, spatial_groupnorm_forward/backward (CS231n assignment 2) or "
        "normlab.functional's batchnorm_forward, layernorm_forward, groupnorm_forward and their backward "
        "functions in FILE, runs them on float64 cases built to expose the classic mistakes, and compares every "
        "output with normlab's functional core. Exit status: 0 when every function found passes, 1 when one "
        "fails, 2 when nothing could be checked. See docs/check.md.")
    parser.add_argument("file", metavar="FILE", help="the Python file with your layers (e.g. cs231n/layers.py)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON (schema normlab-check/1, see docs/check.md)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds one call of your function may take before it is stopped (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cases (default 0)")


def run(args) -> int:
    from normlab.check import check_file

    if not 0 < args.timeout < math.inf:  # NaN fails too
        return fail(None, f"--timeout must be a positive, finite number of seconds, got {args.timeout}")
    try:
        report = check_file(args.file, timeout=args.timeout, seed=args.seed)
    except FileNotFoundError as error:
        return fail(None, error)
    print(report.to_json() if args.json else report.to_text(), end="\n" if args.json else "")
    return report.exit_code
