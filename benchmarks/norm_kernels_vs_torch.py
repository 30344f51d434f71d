"""The compiled normalization kernels against torch on the cases their tuning aims at: layer norm
(8192, 768) and batch norm on small planes (a small ResNet's 14x14, 7x7 and 4x4 maps), float32, forward +
backward, through normlab.functional (layer norm) and normlab.nn.BatchNorm2d (batch norm: the module's
Python overhead counts).

    python3 benchmarks/norm_kernels_vs_torch.py [--threads 2] [--repeats 15] [--burst 4]
    python3 benchmarks/norm_kernels_vs_torch.py --separate [--rounds 5]

Default: normlab and torch take turns in one process (`normlab.timing.time_passes`: a pause, an
untimed pass, then `burst` passes back to back, each timed). --separate: each side alone in a fresh
process, sides alternating, `rounds` processes each; the table gives the median of their medians, and the
median of each round's ratio (its two processes ran back to back, so a slow minute slows both). Compare
ratios from one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import numpy as np

CASES = {
    "layernorm (8192, 768)": ("layernorm", (8192, 768)),
    "batchnorm2d (128, 32, 14, 14)": ("batchnorm", (128, 32, 14, 14)),
    "batchnorm2d (128, 64, 7, 7)": ("batchnorm", (128, 64, 7, 7)),
    "batchnorm2d (128, 128, 4, 4)": ("batchnorm", (128, 128, 4, 4)),
}


def _normlab_pass(kind, x, dout):
    from normlab import functional as F
    from normlab import nn

    if kind == "layernorm":
        gamma, beta = np.ones(x.shape[1:], x.dtype), np.zeros(x.shape[1:], x.dtype)
        return (lambda: F.layernorm_forward(x, gamma, beta, backend="numba")[1],
                lambda cache: F.layernorm_backward(dout, cache))
    layer = nn.BatchNorm2d(x.shape[1])

    def forward():
        layer.forward(x)

    return forward, lambda _: layer.backward(dout)


def _torch_pass(torch, kind, x, dout):
    xt, doutt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)
    if kind == "layernorm":
        weight = torch.ones(x.shape[1:], requires_grad=True)
        bias = torch.zeros(x.shape[1:], requires_grad=True)
        forward = lambda: torch.nn.functional.layer_norm(xt, x.shape[1:], weight, bias)
        leaves = (xt, weight, bias)
    else:
        layer = torch.nn.BatchNorm2d(x.shape[1])
        forward = lambda: layer(xt)
        leaves = (xt, *layer.parameters())

    def backward(out):
        for leaf in leaves:
            leaf.grad = None  # a fresh gradient each pass, as zero_grad leaves it: else torch adds into the old one
        out.backward(doutt)

    return forward, backward


def _passes(sides, kind, shape, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    dout = rng.standard_normal(shape, dtype=np.float32)
    passes = {}
    for side in sides:
        if side == "normlab":
            import numba

            from normlab.kernels import numba_available

            numba_available()  # chooses normlab's threading layer before set_num_threads starts numba's threads
            numba.set_num_threads(threads)
            passes[side] = _normlab_pass(kind, x, dout)
        else:
            import torch

            torch.set_num_threads(threads)
            passes[side] = _torch_pass(torch, kind, x, dout)
    return passes


def _measure(sides, names, threads, repeats, burst):
    from normlab.timing import time_passes

    results = {}
    for name in names:
        kind, shape = CASES[name]
        times = time_passes(_passes(sides, kind, shape, threads), repeats, warmup=2, burst=burst)
        results[name] = {side: [t.forward, t.backward] for side, t in times.items()}
    return results


def _row(name, sides, fb):
    cells = " ".join(f"{fb[s][0] * 1e3:>8.3f} {fb[s][1] * 1e3:>8.3f} {sum(fb[s]) * 1e3:>8.3f}" for s in sides)
    ratio = sum(fb["torch"]) / sum(fb["normlab"]) if len(sides) == 2 else float("nan")
    print(f"{name:>30} {cells} {ratio:>9.2f}x")


def _header(sides):
    cells = " ".join(f"{s[:7] + ' fwd':>8} {'bwd':>8} {'total ms':>8}" for s in sides)
    print(f"{'case':>30} {cells} {'torch/ours':>10}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--burst", type=int, default=4)
    parser.add_argument("--cases", default="", help="substring selecting cases, e.g. 'batchnorm'")
    parser.add_argument("--separate", action="store_true", help="each side alone in fresh processes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alone", choices=("normlab", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [n for n in CASES if args.cases in n]
    sides = ("normlab", "torch")
    if args.alone:
        print(json.dumps(_measure((args.alone,), names, args.threads, args.repeats, args.burst)))
        return 0
    if not args.separate:
        results = _measure(sides, names, args.threads, args.repeats, args.burst)
        _header(sides)
        for name in names:
            _row(name, sides, results[name])
        return 0
    runs = {name: {s: [] for s in sides} for name in names}
    for _ in range(args.rounds):
        for side in sides:
            command = [sys.executable, __file__, "--alone", side, "--cases", args.cases, "--threads",
                       str(args.threads), "--repeats", str(args.repeats), "--burst", str(args.burst)]
            out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            for name in names:
                runs[name][side].append(out[name][side])
    _header(sides)
    for name in names:
        medians = {s: [statistics.median(r[0] for r in runs[name][s]), statistics.median(r[1] for r in runs[name][s])]
                   for s in sides}
        _row(name, sides, medians)
        totals = {s: [sum(r) * 1e3 for r in runs[name][s]] for s in sides}
        spread = {s: (min(t), max(t)) for s, t in totals.items()}
        print(f"{'':>30} totals per process: " + ", ".join(f"{s} {lo:.3f}-{hi:.3f}" for s, (lo, hi) in spread.items()))
        # Each round's two processes ran one after the other: their ratio shares the machine's state of the moment.
        paired = [sum(t) / sum(n) for n, t in zip(runs[name]["normlab"], runs[name]["torch"])]
        print(f"{'':>30} torch/ours per round: " + " ".join(f"{r:.2f}" for r in paired)
              + f"; median {statistics.median(paired):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
