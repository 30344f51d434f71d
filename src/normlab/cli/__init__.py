"""The `normlab` command. Each subcommand is a module of this package, named after it, defining

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


def build_parser() -> argparse.ArgumentParser:
    from normlab import __version__

    parser = argparse.ArgumentParser(
        prog="normlab",
        description="Batch normalization and its relatives: understood, checked and used, in NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(f"{__name__}.{args.command}").run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
