"""The `normlab` command. Each subcommand is a module in this package defining

    NAME: str                      the subcommand's name
    HELP: str                      one line for `normlab --help`
    add_arguments(parser)          its options
    run(args) -> int               what it does (import heavy modules here, not at the top)

so a new subcommand is a new file, found by `main` without being listed anywhere.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def _subcommand_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    from normlab import __version__

    parser = argparse.ArgumentParser(
        prog="normlab",
        description="Batch normalization and its relatives: understood, checked and used, in NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommand_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
