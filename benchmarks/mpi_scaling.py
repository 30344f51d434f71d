"""Training throughput on one process against `mpiexec -n 2`: does data parallelism on one machine pay?

    python3 benchmarks/mpi_scaling.py                 # fcnet and bn-cnn, a table of images per second
    python3 benchmarks/mpi_scaling.py --models fcnet --steps 40

For each model it times training steps of `DistributedTrainer` (the step of `normlab train --distributed`:
shard, forward, backward, gradient all-reduce, optimizer) on Fashion-MNIST-shaped random data, in three
setups, each a fresh process (or two) started without any thread variable, so the thread counts are
normlab's own choice:

- 1 process on every core (global batch B): `normlab train`;
- 2 ranks (global batch B, B / 2 per rank): `mpiexec -n 2 normlab train --distributed`, each rank on its
  share of the cores (`normlab.distributed.threads`);
- 1 process on 1 thread with batch B / 2: the weak-scaling baseline (the same work per process as a rank).

It prints images per second (global batch x steps / time of the timed steps on rank 0, after warm-up
steps that also load the compiled kernels), the 2-rank / 1-process ratio at the same global batch, and the
weak-scaling efficiency: step time on 1 process with B / 2 over step time on 2 ranks with B / 2 each.
With `--worker` it is one of those processes (used by the driver).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
DEFAULT_STEPS = {"fcnet": 60, "bn-cnn": 8}


def worker(model_name: str, batch: int, steps: int, warmup: int) -> None:
    """Time `steps` training steps of a global batch `batch` on the processes of `world()`; rank 0 prints
    one JSON line."""
    import numpy as np

    from normlab.blas import blas_threads
    from normlab.distributed import broadcast_state, convert_sync_batchnorm, world
    from normlab.models import build_model
    from normlab.parallel import worker_count
    from normlab.train.config import TrainConfig
    from normlab.train.distributed_trainer import DistributedTrainer
    from normlab.train.run import build_optimizer

    comm = world()
    rng = np.random.default_rng(0)
    n = batch * (steps + warmup)
    x = rng.standard_normal((n, 1, 28, 28), dtype=np.float32)  # standardized images, as training sees them
    y = rng.integers(0, 10, n)
    options = {"hidden_dims": (512, 256), "normalization": "batch"} if model_name == "fcnet" else {}
    model = build_model(model_name, input_shape=(1, 28, 28), num_classes=10, rng=rng, **options)
    if comm.size > 1:
        model = convert_sync_batchnorm(model, comm)
    broadcast_state(model, comm)
    optimizer = build_optimizer(TrainConfig(model=model_name), model)
    trainer = DistributedTrainer(model, optimizer, x, y, x[:0], y[:0], comm=comm, epochs=1, batch_size=batch,
                                 rng=rng, progress=False)
    for i in range(warmup):
        trainer.train_step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
    comm.barrier()
    started = time.perf_counter()
    for i in range(warmup, warmup + steps):
        trainer.train_step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
    comm.barrier()
    seconds = time.perf_counter() - started
    numba = sys.modules.get("numba")
    if comm.is_root:
        print(json.dumps({"model": model_name, "processes": comm.size, "batch": batch, "steps": steps,
                          "seconds": seconds, "images_per_s": batch * steps / seconds,
                          "step_ms": 1e3 * seconds / steps, "blas_threads": blas_threads(),
                          "numba_threads": numba.get_num_threads() if numba else None,
                          "workers": worker_count()}), flush=True)


def launch(model: str, batch: int, steps: int, warmup: int, processes: int, one_thread: bool) -> dict:
    """One setup in fresh processes; its JSON line."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    if one_thread:
        env.update({name: "1" for name in THREAD_VARIABLES})
    command = [sys.executable, __file__, "--worker", model, "--batch", str(batch), "--steps", str(steps),
               "--warmup", str(warmup)]
    if processes > 1:
        command = ["mpiexec", "-n", str(processes), *command]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["fcnet", "bn-cnn"], choices=["fcnet", "bn-cnn"])
    parser.add_argument("--batch", type=int, default=128, help="global batch (default 128, normlab train's)")
    parser.add_argument("--steps", type=int, help="timed steps (default: fcnet 60, bn-cnn 8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each setup this many times, in turn, and keep its fastest run (default 1): "
                             "on a shared machine other jobs only ever slow a run down")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements to FILE")
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.steps, args.warmup)
        return
    if shutil.which("mpiexec") is None:
        raise SystemExit("mpiexec is not on PATH: pip install 'normlab[mpi]'")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} cores; global batch {args.batch}; images per second of training steps (rank 0's clock), "
          f"the fastest of {args.repeats} run(s) per setup")
    print(f"{'model':<8} {'1 process':>18} {'2 ranks':>18} {'2 ranks / 1':>12} "
          f"{'1 proc, 1 thread, B/2':>22} {'weak scaling':>13}")
    rows = []
    for model in args.models:
        steps = args.steps or DEFAULT_STEPS[model]
        runs = [[launch(model, args.batch, steps, args.warmup, 1, one_thread=False),
                 launch(model, args.batch, steps, args.warmup, 2, one_thread=False),
                 launch(model, args.batch // 2, steps, args.warmup, 1, one_thread=True)]
                for _ in range(args.repeats)]
        one, two, half = (max(setup, key=lambda r: r["images_per_s"]) for setup in zip(*runs))
        ratio, weak = two["images_per_s"] / one["images_per_s"], half["step_ms"] / two["step_ms"]
        rows.append({"one_process": one, "two_ranks": two, "one_thread_half_batch": half, "ratio": ratio,
                     "weak_scaling_efficiency": weak})
        print(f"{model:<8} {one['images_per_s']:>8.0f} ({one['blas_threads']} thr) "
              f"{two['images_per_s']:>8.0f} ({two['blas_threads']} thr) {ratio:>11.2f}x "
              f"{half['images_per_s']:>22.0f} {weak:>13.2f}")
    print("thr: OpenBLAS threads per process (numba's follow the same share). 2 ranks / 1: images per second "
          "at the same global batch. weak scaling: step time of 1 process on batch B/2 over that of 2 ranks "
          "on B/2 each (1.0 = perfect).")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
