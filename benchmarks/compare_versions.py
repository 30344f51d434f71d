"""Compare the normalizations' forward + backward across checkouts of normlab in ONE process, calls in a
shuffled order, so the machine's swings (on a shared 2-core machine, 2x over a minute) hit every version
alike. Separate processes, even alternating, could not tell a 5% change from noise here.

    python3 benchmarks/compare_versions.py /path/to/old/src src --reps 150

Each version's modules are imported under their own names and swapped into `sys.modules` before each call,
so the lazy imports inside a version (its kernels) resolve to that version's code. Prints, per case, each
version's median time and its ratio to the first version's (the median, and the 10th percentile).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CASES = {  # name: (shape, groups)
    "batchnorm (N, D)": ((8192, 1024), 0),
    "batchnorm (N, C, H, W)": ((128, 64, 32, 32), 0),
    "layernorm (N, D)": ((8192, 768), 0),
    "groupnorm G=32": ((128, 64, 32, 32), 32),
}
QUICK_SHAPES = {"batchnorm (N, D)": (256, 128), "batchnorm (N, C, H, W)": (8, 8, 8, 8),
                "layernorm (N, D)": (256, 96), "groupnorm G=32": (8, 64, 4, 4)}


def _ours() -> dict[str, object]:
    return {m: sys.modules[m] for m in list(sys.modules) if m == "normlab" or m.startswith("normlab.")}


class Version:
    """One checkout's `normlab`, importable side by side with the others."""

    def __init__(self, src: str):
        self.src = str(Path(src).resolve())
        for name in _ours():
            del sys.modules[name]
        sys.path.insert(0, self.src)
        try:
            from normlab import functional
        finally:
            sys.path.remove(self.src)
        if not functional.__file__.startswith(self.src):
            raise SystemExit(f"{src}: imported normlab from {functional.__file__}, not from this folder")
        self.functional = functional
        self.modules = _ours()

    def use(self) -> None:
        """Make this version's modules the ones `import normlab...` finds (and keep what it imported)."""
        for name in _ours():
            del sys.modules[name]
        sys.modules.update(self.modules)

    def remember(self) -> None:
        self.modules.update(_ours())

    def pass_(self, name: str, x: np.ndarray, dout: np.ndarray, groups: int) -> Callable[[], object]:
        """forward + backward of the case on the compiled backend, with fresh parameters."""
        F, c = self.functional, x.shape[1]
        ones, zeros = np.ones(c, x.dtype), np.zeros(c, x.dtype)
        if name.startswith("batchnorm"):
            mean, var = np.zeros(c, x.dtype), np.ones(c, x.dtype)
            return lambda: F.batchnorm_backward(dout, F.batchnorm_forward(x, ones, zeros, mean, var,
                                                                          backend="numba")[1])
        if name.startswith("layernorm"):
            gamma, beta = np.ones(x.shape[1:], x.dtype), np.zeros(x.shape[1:], x.dtype)
            return lambda: F.layernorm_backward(dout, F.layernorm_forward(x, gamma, beta, backend="numba")[1])
        return lambda: F.groupnorm_backward(dout, F.groupnorm_forward(x, ones, zeros, groups, backend="numba")[1])


def compare(versions: list[Version], reps: int, quick: bool, seed: int) -> list[dict]:
    rng, rows = np.random.default_rng(seed), []
    for name, (shape, groups) in CASES.items():
        shape = QUICK_SHAPES[name] if quick else shape
        x = rng.standard_normal(shape, dtype=np.float32) * 2 + 1
        dout = rng.standard_normal(shape, dtype=np.float32)
        passes = []
        for v in versions:
            v.use()
            run = v.pass_(name, x, dout, groups)
            for _ in range(3):  # compile or load the kernels, warm the caches
                run()
            v.remember()
            passes.append(run)
        order = [i for i in range(len(versions)) for _ in range(reps)]
        random.Random(seed).shuffle(order)
        times: list[list[float]] = [[] for _ in versions]
        for i in order:
            versions[i].use()
            start = time.perf_counter()
            passes[i]()
            times[i].append(time.perf_counter() - start)
        rows.append({"case": name, "shape": shape, "median_ms": [1e3 * float(np.median(t)) for t in times],
                     "p10_ms": [1e3 * float(np.percentile(t, 10)) for t in times]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="src folders of the checkouts (the first is the reference)")
    parser.add_argument("--reps", type=int, default=100, help="timed calls per version and case (default 100)")
    parser.add_argument("--quick", action="store_true", help="small shapes: a smoke test in seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    versions = [Version(src) for src in args.sources]
    rows = compare(versions, args.reps, args.quick, args.seed)
    labels = [f"v{i}" for i in range(len(versions))]
    for label, v in zip(labels, versions):
        print(f"{label}: {v.src}")
    print(f"\n{'case':24s} " + " ".join(f"{label + ' ms':>9s}" for label in labels)
          + "".join(f" {label + '/v0':>9s} {'p10':>6s}" for label in labels[1:]))
    for r in rows:
        med, p10 = r["median_ms"], r["p10_ms"]
        print(f"{r['case']:24s} " + " ".join(f"{m:9.2f}" for m in med)
              + "".join(f" {m / med[0]:9.3f} {p / p10[0]:6.3f}" for m, p in zip(med[1:], p10[1:])))
    print(f"\nmedian of {args.reps} calls per version and case, shuffled in one process; p10: the same ratio of "
          "the 10th percentiles")


if __name__ == "__main__":
    main()
