"""`normlab bench`: time the normalization kernels against this machine's copy bandwidth and against
PyTorch's CPU kernels on the same number of threads; print a table, optionally write JSON."""

from __future__ import annotations

from normlab.cli._run_args import number

HELP = "time the normalization kernels against the memory bandwidth and against PyTorch"


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 repetitions: a smoke test in seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--backend", choices=("auto", "numpy", "numba"), default="auto",
                        help="normalization backend to measure (default auto: numba when it imports)")
    parser.add_argument("--threads", type=number(int, low=1),
                        help="threads for the kernels and for torch (default: every core)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")


def run(args) -> int:
    import json
    from pathlib import Path

    from normlab.bench import format_report, run_bench

    report = run_bench(quick=args.quick, backend=args.backend, seed=args.seed, threads=args.threads)
    print(format_report(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 0
