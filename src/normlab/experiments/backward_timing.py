"""Timing the two batch norm backward passes, in a process of their own.

`measure(shapes, repeats, seed)` runs `python -m normlab.experiments.backward_timing` with glibc's malloc told
to keep freed memory (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 1 GiB). By default glibc gives
blocks above a threshold that moves with the process's history back to the system, and each new temporary
array then costs page faults: the staged backward allocates several times as many temporaries as the
closed form, and in one process its time at the same size varied from 0.2 to 1 ms (128 x 512, float32)
with that history. A fresh process with a fixed allocator times the arithmetic, and leaves the caller's
allocator alone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from normlab import functional as F
from normlab.gradcheck import relative_error
from normlab.timing import paired_samples

ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
DTYPES = ("float32", "float64")


def time_backwards(shape: tuple[int, ...], dtype, repeats: int, rng: np.random.Generator) -> dict:
    """Time batchnorm_backward_staged and batchnorm_backward on one training-mode forward of a random
    input of `shape` and `dtype`. Returns the median seconds of each, their ratio, and the largest relative
    error between the two sets of gradients. The ratio of the fastest samples is reported too: on a loaded
    machine the median carries the load, the fastest sample mostly the computation."""
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    c = shape[1]
    gamma = (1 + 0.1 * rng.standard_normal(c)).astype(dtype)
    _, cache = F.batchnorm_forward(x, gamma, np.zeros(c, dtype))
    dout = rng.standard_normal(shape).astype(dtype)
    staged, simplified = paired_samples((lambda: F.batchnorm_backward_staged(dout, cache),
                                         lambda: F.batchnorm_backward(dout, cache)), repeats)
    gap = max(relative_error(a, b) for a, b in zip(F.batchnorm_backward_staged(dout, cache),
                                                  F.batchnorm_backward(dout, cache)))
    return {"shape": list(shape), "dtype": np.dtype(dtype).name, "elements": int(np.prod(shape)),
            "staged_ms": statistics.median(staged) * 1e3, "simplified_ms": statistics.median(simplified) * 1e3,
            "speedup": statistics.median(staged) / statistics.median(simplified),
            "speedup_of_fastest": min(staged) / min(simplified), "max_relative_error": gap}


def measure(shapes: Sequence[Sequence[int]], repeats: int, seed: int) -> list[dict]:
    """time_backwards for every dtype and shape, in a fresh Python process with ALLOCATOR_ENV. Returns
    its rows, float32 first."""
    import normlab

    source = str(Path(normlab.__file__).resolve().parents[1])  # this normlab, not another installed one
    env = {**os.environ, **ALLOCATOR_ENV,
           "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    request = json.dumps({"shapes": [list(s) for s in shapes], "repeats": repeats, "seed": seed})
    done = subprocess.run([sys.executable, "-m", __name__, request], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the timing process failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(request: str) -> None:
    args = json.loads(request)
    rng = np.random.default_rng(args["seed"])
    rows = [time_backwards(tuple(shape), np.dtype(dtype), args["repeats"], rng)
            for dtype in DTYPES for shape in args["shapes"]]
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1])
