"""Options shared by the subcommands that use a trained run (evaluate, predict, export)."""

from __future__ import annotations

import sys


def user_errors() -> tuple[type[Exception], ...]:
    """What loading a run or its data raises with a message meant for the user."""
    from normlab.data import ChecksumError, DataFormatError, DatasetNotFoundError

    return (ValueError, FileNotFoundError, KeyError, ImportError, DatasetNotFoundError, DataFormatError,
            ChecksumError)


def add_run_argument(parser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory written by normlab train (runs/<date-time>)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="best: model.safetensors, the epoch with the best validation accuracy (default); "
                             "last: the latest checkpoint")


def add_data_arguments(parser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="where to look for the dataset first (then $NORMLAB_DATA, ~/.cache/normlab, "
                             "/usr/share/datasets/<name>)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail if the files are missing")


def fail(command: str, error: Exception) -> int:
    print(f"normlab {command}: error: {error}", file=sys.stderr)
    return 2
