"""`normlab experiment NAME|all`: run an experiment that tests one of batch norm's claims and write
OUT/NAME/results.json, summary.md and PNG plots (see `normlab.experiments`).

Its runs (settings x seeds) go through a concurrent.futures executor: `--jobs N` local processes, or, when
launched as `mpiexec -n K python -m mpi4py.futures -m normlab experiment ...`, the K - 1 MPI workers.
Finished runs are cached in OUT/NAME/runs/, so an interrupted sweep resumes where it stopped.

`--model bn-cnn` picks an experiment's convolutional track, registered as NAME-cnn (batch-size-cnn, ...): it
writes OUT/NAME-cnn/, so the fully connected track's results stay where they are. `all` runs both tracks."""

from __future__ import annotations

import argparse
import time

from normlab.cli._run_args import add_data_arguments, fail, number

HELP = "test one of batch norm's claims on real data: results.json, plots and a summary table"
TRACKS = {"fcnet": "", "bn-cnn": "-cnn"}  # --model -> the suffix of the track's registered name


def track_names(name: str, model: str | None, experiments) -> list[str]:
    """The registered experiments that `normlab experiment NAME --model MODEL` runs. Without --model: NAME
    itself, or every experiment for "all". With it: NAME's track for that model, or for "all" every
    experiment that has one (the fully connected track, fcnet, is each experiment's plain name)."""
    if model is None:
        return list(experiments) if name == "all" else [name]
    suffix = TRACKS[model]
    base = {n: next((n[:-len(s)] for s in TRACKS.values() if s and n.endswith(s)), n) for n in experiments}
    if name == "all":
        return [n + suffix for n in experiments if base[n] == n and n + suffix in experiments]
    if base[name] + suffix not in experiments:
        have = [base[n] for n in experiments if suffix and n.endswith(suffix)]
        raise ValueError(f"--model {model}: experiment {name!r} has no {model} track; the experiments that have "
                         f"one: {', '.join(have)}")
    return [base[name] + suffix]


positive_int = number(int, low=1, expected="a positive integer")
non_negative_int = number(int, low=0, expected="a non-negative integer")


def add_arguments(parser) -> None:
    from normlab.experiments import EXPERIMENTS
    from normlab.experiments.base import DATASETS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    width = max(len(name) for name in EXPERIMENTS)
    parser.epilog = "experiments:\n" + "\n".join(f"  {name:<{width}}  {e.claim}" for name, e in EXPERIMENTS.items())
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"], metavar="NAME",
                        help=f"the experiment ({', '.join(EXPERIMENTS)}), or all of them in turn")
    parser.add_argument("--model", choices=list(TRACKS),
                        help="the network: fcnet (the fully connected track, each experiment's default) or bn-cnn "
                             "(the convolutional track of batch-size, learning-rate and init-scale, written to "
                             "OUT/NAME-cnn/)")
    parser.add_argument("--quick", action="store_true", help="a small version that takes about a minute")
    parser.add_argument("--out", metavar="DIR", default="results",
                        help="write into DIR/NAME/ (default results/); refuses to replace a finished result")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DIR/NAME/results.json if it exists (cached runs in DIR/NAME/runs/ are reused)")
    parser.add_argument("--seeds", type=positive_int, metavar="K",
                        help="run every setting with K seeds (default 5; 2 with --quick)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="the first seed (default 0): seeds SEED .. SEED+K-1")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="run N runs at a time in local processes (default 1); ignored under mpi4py.futures")
    parser.add_argument("--dataset", choices=DATASETS, default="fashion-mnist",
                        help="dataset of the training experiments (default fashion-mnist)")
    add_data_arguments(parser)
    # Tests shrink the quick version further; not for users.
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)


def run(args) -> int:
    from normlab.data import DatasetNotFoundError
    from normlab.experiments import EXPERIMENTS, run_experiment
    from normlab.experiments.base import check_out_dir
    from normlab.experiments.sweep import make_executor

    try:
        names = track_names(args.name, args.model, EXPERIMENTS)
        for name in names:  # refuse before running anything
            check_out_dir(name, args.out, args.overwrite)
        with make_executor(args.jobs) as executor:
            for name in names:
                started = time.perf_counter()
                print(f"{name}: {EXPERIMENTS[name].claim}{' (quick)' if args.quick else ''}", flush=True)
                out_dir = run_experiment(name, args.out, quick=args.quick, scale=args.scale, dataset=args.dataset,
                                         data_dir=args.data_dir, download=not args.no_download, seed=args.seed,
                                         seeds=args.seeds, overwrite=args.overwrite, executor=executor,
                                         log=lambda line: print(line, flush=True))
                print(f"{name}: done in {time.perf_counter() - started:.0f} s; see {out_dir / 'summary.md'}",
                      flush=True)
    except (ValueError, DatasetNotFoundError) as e:  # normlab.data's other errors are ValueErrors
        return fail("experiment", e)
    return 0
