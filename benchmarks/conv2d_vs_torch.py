"""conv2d and pooling speed: normlab's NumPy im2col convolution (forward + backward) against
torch.nn.functional on the CPU with the same thread count, float32.

    python3 benchmarks/conv2d_vs_torch.py [--repeats 7] [--threads 2] [--pool-backends numpy,numba]

Pooling rows come once per backend in --pool-backends (the NumPy path and the compiled kernels, when numba
imports); convolution rows run the default backend.

Prints a table of medians, the two sides timed alternately: ratio = normlab time / torch time (lower is
better; the target for the 3x3 conv is <= 1.5x), on the wall clock and in process CPU time (the steadier
measure on a shared machine when each side uses one thread). Set OPENBLAS_NUM_THREADS to --threads so
NumPy's BLAS uses as many threads as torch; the header shows what it was set to.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _versus_torch import blas_threads, import_torch

from normlab import functional as F
from normlab.kernels import numba_available
from normlab.timing import interleaved_medians

# (name, input shape, weight shape, stride, padding); the first is the acceptance case.
CONV_CASES = [
    ("3x3 s1 p1 (acceptance)", (64, 64, 32, 32), (64, 64, 3, 3), 1, 1),
    ("3x3 s2 p1", (64, 64, 32, 32), (128, 64, 3, 3), 2, 1),
    ("1x1 s1 p0", (64, 64, 32, 32), (64, 64, 1, 1), 1, 0),
    ("3x3 s1 p1, C=1 (first layer)", (128, 1, 28, 28), (32, 1, 3, 3), 1, 1),
]
POOL_CASES = [("2x2 s2 (bn-cnn)", (128, 32, 28, 28), 2, None), ("2x2 s2", (64, 64, 32, 32), 2, None),
              ("3x3 s2", (64, 64, 32, 32), 3, 2)]


def conv_rows(torch, rng, name, xs, ws, stride, padding, repeats):
    """Timings of one convolution: forward alone, and forward + backward."""
    tf = torch.nn.functional
    x, w = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32) * 0.05
    b = rng.standard_normal(ws[0], dtype=np.float32)
    out, _ = F.conv2d_forward(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    tdout = torch.from_numpy(dout)

    def ours_forward():
        F.conv2d_forward(x, w, b, stride, padding)

    def ours_both():
        F.conv2d_backward(dout, F.conv2d_forward(x, w, b, stride, padding)[1])

    def torch_forward():
        with torch.no_grad():
            tf.conv2d(tx, tw, tb, stride, padding)

    def torch_both():
        tx.grad = tw.grad = tb.grad = None
        tf.conv2d(tx, tw, tb, stride, padding).backward(tdout)

    yield f"conv2d {name} {xs} fwd", *interleaved_medians({"normlab": ours_forward, "torch": torch_forward},
                                                          repeats).values()
    yield f"conv2d {name} {xs} fwd+bwd", *interleaved_medians({"normlab": ours_both, "torch": torch_both},
                                                              repeats).values()


def pool_row(torch, rng, kind, xs, k, s, repeats, backend):
    """Timings of one pooling, forward + backward, normlab's on `backend`."""
    forward, backward = getattr(F, f"{kind}_forward"), getattr(F, f"{kind}_backward")
    torch_pool = getattr(torch.nn.functional, kind)
    x = rng.standard_normal(xs, dtype=np.float32)
    out, _ = forward(x, k, s, backend=backend)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    tx, tdout = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)

    def ours():
        backward(dout, forward(x, k, s, backend=backend)[1])

    def theirs():
        tx.grad = None
        torch_pool(tx, k, s).backward(tdout)

    return tuple(interleaved_medians({"normlab": ours, "torch": theirs}, repeats).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch threads; match NumPy's BLAS threads")
    parser.add_argument("--pool-backends", default="numpy,numba" if numba_available() else "numpy",
                        help="comma-separated backends for the pooling rows (default: %(default)s)")
    args = parser.parse_args()
    pool_backends = args.pool_backends.split(",")
    torch = import_torch(args.threads)
    rng = np.random.default_rng(0)
    print(f"torch threads {torch.get_num_threads()}, NumPy BLAS threads: {blas_threads()}, float32, "
          f"median of {args.repeats}")
    print(f"{'case':<58} {'normlab ms':>10} {'torch ms':>9} {'ratio':>6} | {'CPU: normlab':>12} {'torch':>7} {'ratio':>6}")
    rows = [row for case in CONV_CASES for row in conv_rows(torch, rng, *case, args.repeats)]
    rows += [(f"{kind} {name} {xs} fwd+bwd {backend}", *pool_row(torch, rng, kind, xs, k, s, args.repeats, backend))
             for name, xs, k, s in POOL_CASES for kind in ("max_pool2d", "avg_pool2d") for backend in pool_backends]
    for label, ours, theirs in rows:
        print(f"{label:<58} {ours.wall * 1e3:>10.1f} {theirs.wall * 1e3:>9.1f} {ours.wall / theirs.wall:>5.2f}x | "
              f"{ours.cpu * 1e3:>12.1f} {theirs.cpu * 1e3:>7.1f} {ours.cpu / theirs.cpu:>5.2f}x")


if __name__ == "__main__":
    main()
