"""Options shared by the subcommands that use a trained run (evaluate, predict, export), and `number`, the
argparse type for numeric options that names the option when a value is out of range."""

from __future__ import annotations

import argparse
import sys

# What loading a run or its data raises with a message meant for the user (normlab.data's errors are
# ValueErrors and FileNotFoundErrors).
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, ImportError)


def add_run_argument(parser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory written by normlab train (runs/<date-time>)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="best: model.safetensors, the epoch with the best validation accuracy (default); "
                             "last: the latest checkpoint")


def add_data_arguments(parser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where to look for the dataset first, and to download it to (then $NORMLAB_DATA, "
                             "~/.cache/normlab, /usr/share/datasets/<name>)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail if the files are missing")


def fail(command: str | None, error: Exception | str) -> int:
    """Print "normlab COMMAND: error: ERROR" ("error: ERROR" with no command) to stderr; the exit status 2."""
    print(f"normlab {command}: error: {error}" if command else f"error: {error}", file=sys.stderr)
    return 2


def number(kind, *, low=None, low_open=False, high=None, high_open=False, expected=None):
    """An argparse type: a finite number of `kind` in the given range, so a bad value is refused as the
    option typed (--warmup -27), never later as the internal parameter it becomes (warmup_steps). The
    message says what was expected: `expected` ("a positive integer"), or what was wrong with the value."""
    import math

    lower = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    upper = "" if high is None else f"{'<' if high_open else '<='} {high:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            wrong = "an integer" if kind is int else "a number"
        else:
            too_low = low is not None and (value <= low if low_open else value < low)
            too_high = high is not None and (value >= high if high_open else value > high)
            if not math.isfinite(value):
                wrong = "a finite number"
            elif too_low or too_high:
                wrong = f"a number {' and '.join(filter(None, (lower, upper)))}"
            else:
                return value
        raise argparse.ArgumentTypeError(f"expected {expected or wrong}, got {text!r}")

    return parse
