"""Batch norm speed: the staged backward against the simplified closed form, and normlab's NumPy batch
norm (forward + backward) against torch.nn.functional.batch_norm on the CPU with the same thread count.

    python3 benchmarks/batchnorm.py [--repeats 7] [--threads 2]

Prints a table. Ratios come from one run, so machine noise affects both sides alike.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_seconds  # noqa: E402

from normlab import functional as F  # noqa: E402


def staged_vs_simplified(shapes, repeats, rng):
    print(f"{'shape':>20} {'staged ms':>10} {'simplified ms':>14} {'speed-up':>9}")
    for shape in shapes:
        x = rng.standard_normal(shape)
        c = shape[1]
        _, cache = F.batchnorm_forward(x, np.ones(c), np.zeros(c))
        dout = rng.standard_normal(shape)
        staged = median_seconds(lambda: F.batchnorm_backward_staged(dout, cache), repeats)
        simplified = median_seconds(lambda: F.batchnorm_backward(dout, cache), repeats)
        print(f"{str(shape):>20} {staged * 1e3:>10.2f} {simplified * 1e3:>14.2f} {staged / simplified:>8.2f}x")


def numpy_vs_torch(shape, repeats, threads, rng):
    try:
        import torch
    except ImportError:
        print("torch not installed: pip install 'normlab[torch]' to compare")
        return
    torch.set_num_threads(threads)
    x = rng.standard_normal(shape, dtype=np.float32)
    dout = rng.standard_normal(shape, dtype=np.float32)
    c = shape[1]
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    running_mean, running_var = np.zeros(c, np.float32), np.ones(c, np.float32)

    def ours_forward():
        return F.batchnorm_forward(x, gamma, beta, running_mean, running_var)

    def ours_both():
        _, cache = ours_forward()
        F.batchnorm_backward(dout, cache)

    tx = torch.from_numpy(x).requires_grad_()
    tg, tb = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    t_mean, t_var, t_dout = torch.zeros(c), torch.ones(c), torch.from_numpy(dout)

    def torch_forward():
        with torch.no_grad():
            torch.nn.functional.batch_norm(tx, t_mean, t_var, tg, tb, training=True)

    def torch_both():
        tx.grad = tg.grad = tb.grad = None
        torch.nn.functional.batch_norm(tx, t_mean, t_var, tg, tb, training=True).backward(t_dout)

    rows = [("forward", ours_forward, torch_forward), ("forward + backward", ours_both, torch_both)]
    print(f"\nbatch norm, float32 {shape}, torch threads={torch.get_num_threads()}")
    print(f"{'pass':>20} {'normlab ms':>11} {'torch ms':>9} {'normlab speed-up':>17}")
    for name, ours, theirs in rows:
        a, b = median_seconds(ours, repeats), median_seconds(theirs, repeats)
        print(f"{name:>20} {a * 1e3:>11.2f} {b * 1e3:>9.2f} {b / a:>16.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("staged vs simplified batch norm backward (float64; CS231n reports the closed form 1.7-2.1x faster)")
    staged_vs_simplified([(100, 500), (128, 1024), (64, 16, 32, 32)], args.repeats, rng)
    numpy_vs_torch((128, 64, 32, 32), args.repeats, args.threads, rng)


if __name__ == "__main__":
    main()
