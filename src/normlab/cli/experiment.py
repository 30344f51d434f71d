"""`normlab experiment NAME|all`: run an experiment that tests one of batch norm's claims and write
OUT/NAME/results.json, summary.md and PNG plots (see `normlab.experiments`)."""

from __future__ import annotations

import argparse
import sys
import time

NAME = "experiment"
HELP = "test one of batch norm's claims on real data: results.json, plots and a summary table"


def add_arguments(parser) -> None:
    from normlab.experiments import EXPERIMENTS
    from normlab.experiments.base import DATASETS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    width = max(len(name) for name in EXPERIMENTS)
    parser.epilog = "experiments:\n" + "\n".join(f"  {name:<{width}}  {e.claim}" for name, e in EXPERIMENTS.items())
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"], metavar="NAME",
                        help=f"the experiment ({', '.join(EXPERIMENTS)}), or all of them in turn")
    parser.add_argument("--quick", action="store_true", help="a small version that takes about a minute")
    parser.add_argument("--out", metavar="DIR", default="results",
                        help="write into DIR/NAME/ (default results/)")
    parser.add_argument("--dataset", choices=DATASETS, default="fashion-mnist",
                        help="dataset of the training experiments (default fashion-mnist)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="where to look for the dataset first (see normlab train --help)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail if the files are missing")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    # Tests shrink the quick version further; not for users.
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)


def run(args) -> int:
    from normlab.data import ChecksumError, DataFormatError, DatasetNotFoundError
    from normlab.experiments import EXPERIMENTS, run_experiment

    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    for name in names:
        started = time.perf_counter()
        print(f"{name}: {EXPERIMENTS[name].claim}{' (quick)' if args.quick else ''}", flush=True)
        try:
            out_dir = run_experiment(name, args.out, quick=args.quick, scale=args.scale, dataset=args.dataset,
                                     data_dir=args.data_dir, download=not args.no_download, seed=args.seed,
                                     log=lambda line: print(line, flush=True))
        except (ValueError, DatasetNotFoundError, DataFormatError, ChecksumError) as e:
            print(f"normlab experiment: error: {e}", file=sys.stderr)
            return 2
        print(f"{name}: done in {time.perf_counter() - started:.0f} s; see {out_dir / 'summary.md'}", flush=True)
    return 0
