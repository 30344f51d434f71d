"""What synchronizing batch norm costs, and how data-parallel training scales from 1 to 2 processes.

    python3 benchmarks/sync_batchnorm_overhead.py            # launches the runs below and prints two tables

(a) All-reduce overhead per batch norm layer: in one `mpiexec -n 2` run each rank times forward + backward
    of BatchNorm on its local batch and of SyncBatchNorm on the same local batch (whose global batch is
    twice as large); the overhead is the difference. It splits into SyncBatchNorm's extra arithmetic (timed
    with the collectives echoed locally), the bare collectives (one allgather of 1 + 2C floats forward, one
    all-reduce of 2C floats backward, timed alone) and waiting for the other rank.
(b) Weak scaling: one data-parallel training step (forward, loss, backward, gradient all-reduce, SGD) of
    an MLP with batch norm, with a fixed per-rank batch, on 1 process (plain python) and on 2 (mpiexec);
    efficiency = t1 / t2 (1.0: twice the data in the same time). "2-rank compute" is the same step without
    any collective, both ranks running at once: t1 -> compute is the cost of sharing the machine,
    compute -> t2 the cost of communicating (and of waiting for the slower rank).

Every process runs one thread (OMP_NUM_THREADS=1 and friends), so 2 processes need 2 free cores; times are
medians of repeated blocks, taken on the same machine in one invocation. On a shared machine, run it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
LAYER_SHAPES = [(4, 256), (32, 512), (256, 512), (8, 64, 16, 16)]  # local batch (N, C) or (N, C, H, W)
MLP = (784, 512, 512, 10)  # inputs, hidden, hidden, classes


def median_time(fn, comm, repeats: int, number: int) -> float:
    """Median over `repeats` blocks of the seconds per call of fn, every rank starting each block together."""
    fn()  # warm up
    times = []
    for _ in range(repeats):
        comm.barrier()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return float(np.median(times))


def loopback(size: int):
    """A communicator that claims `size` processes but only echoes this one's data: SyncBatchNorm then does
    all of its arithmetic with no message and no waiting, which isolates its extra compute."""
    from normlab.distributed import Communicator

    class Loopback(Communicator):
        def _allgather(self, buf, out):
            out[...] = buf

    comm = Loopback()
    comm.size = size
    return comm


def layer_overheads(comm, repeats: int) -> list[dict]:
    from normlab import nn
    from normlab.distributed import SyncBatchNorm

    rows = []
    rng = np.random.default_rng(comm.rank)
    for shape in LAYER_SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        dout = rng.standard_normal(shape, dtype=np.float32)
        c = shape[1]
        local = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(c)
        synced = SyncBatchNorm(c, comm=comm)
        echoed = SyncBatchNorm(c, comm=loopback(comm.size))

        def step(layer):
            return lambda: layer.backward(layer.forward(x))

        number = max(1, int(2e6 // x.size))
        t_local = median_time(step(local), comm, repeats, number)
        t_sync = median_time(step(synced), comm, repeats, number)
        t_echo = median_time(step(echoed), comm, repeats, number)
        gather_buf, reduce_buf = np.zeros(1 + 2 * c), np.zeros(2 * c)
        t_collectives = median_time(lambda: (comm.allgather(gather_buf), comm.allreduce_sum(reduce_buf)), comm,
                                    repeats, 200)
        rows.append({"shape": list(shape), "local_ms": t_local * 1e3, "sync_ms": t_sync * 1e3,
                     "echo_ms": t_echo * 1e3, "collectives_ms": t_collectives * 1e3})
    return rows


def training_step_times(comm, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per training step with a fixed per-rank batch: "step" data-parallel (SyncBatchNorm, weighted
    backward, gradient all-reduce, SGD); "compute" the same arithmetic on this rank alone (BatchNorm, no
    collectives), run by every rank at once, so it shows what sharing the machine costs without any
    communication."""
    from normlab import nn
    from normlab.distributed import DataParallel
    from normlab.functional import softmax_cross_entropy

    def mlp():
        rng = np.random.default_rng(0)
        d, h1, h2, k = MLP
        return nn.Sequential(nn.Linear(d, h1, rng=rng), nn.BatchNorm1d(h1), nn.ReLU(),
                             nn.Linear(h1, h2, rng=rng), nn.BatchNorm1d(h2), nn.ReLU(), nn.Linear(h2, k, rng=rng))

    data = np.random.default_rng(comm.rank)
    x = data.standard_normal((batch, MLP[0]), dtype=np.float32)  # this rank's batch: fixed size per rank
    y = data.integers(0, MLP[-1], batch)
    dp, alone = DataParallel(mlp(), comm), mlp()

    def sgd(model):
        for p in model.parameters():
            p.data -= 0.01 * p.grad

    def step():
        dp.train_step(x, y, softmax_cross_entropy)
        sgd(dp.model)

    def compute():
        alone.zero_grad()
        _, dlogits = softmax_cross_entropy(alone.forward(x), y)
        alone.backward(dlogits)
        sgd(alone)

    return {"step": median_time(step, comm, repeats, 5), "compute": median_time(compute, comm, repeats, 5)}


def worker(args) -> None:
    from normlab.distributed import abort_on_error

    with abort_on_error() as comm:
        result = {"size": comm.size,
                  "steps": {b: training_step_times(comm, b, args.repeats) for b in args.batches}}
        if comm.size > 1:
            result["layers"] = layer_overheads(comm, args.repeats)
        # Each rank's own times; the slowest rank sets the pace of a synchronous step.
        everyone = comm.allgather_object(result)
        if comm.is_root:
            print(json.dumps(everyone))


def launch(size: int, args) -> list[dict]:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats),
               "--batches", *map(str, args.batches)]
    if size > 1:
        command = ["mpiexec", "-n", str(size), *command]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per measurement (median taken)")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256], help="per-rank batch sizes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    load_before = f"{os.getloadavg()[0]:.2f}"
    one, two = launch(1, args), launch(2, args)

    print("(a) batch norm forward + backward per layer, float32, 2 ranks, 1 thread each (rank-max of medians)")
    print("    SyncBN math only: its arithmetic with the collectives echoed locally (no messages, no waiting)")
    print(f"{'local batch':>18} {'BatchNorm ms':>13} {'SyncBN math only':>17} {'SyncBN ms':>10} {'overhead ms':>12} "
          f"{'ratio':>6} {'collectives ms':>15}")
    for i, row in enumerate(two[0]["layers"]):
        local, echo, synced, coll = (max(r["layers"][i][key] for r in two)
                                     for key in ("local_ms", "echo_ms", "sync_ms", "collectives_ms"))
        print(f"{str(tuple(row['shape'])):>18} {local:>13.3f} {echo:>17.3f} {synced:>10.3f} {synced - local:>12.3f} "
              f"{synced / local:>6.2f} {coll:>15.3f}")

    print(f"\n(b) weak scaling of a data-parallel training step, MLP {MLP} with 2 SyncBatchNorm, float32")
    print("    compute: each rank's step alone (no collectives) while the other rank runs too")
    print(f"{'batch per rank':>15} {'1 rank ms':>10} {'2 ranks ms':>11} {'efficiency t1/t2':>17} "
          f"{'2-rank compute ms':>18} {'communication ms':>17}")
    for b in args.batches:
        t1 = one[0]["steps"][str(b)]["step"]
        t2 = max(r["steps"][str(b)]["step"] for r in two)
        compute = max(r["steps"][str(b)]["compute"] for r in two)
        print(f"{b:>15} {t1 * 1e3:>10.2f} {t2 * 1e3:>11.2f} {t1 / t2:>17.2f} {compute * 1e3:>18.2f} "
              f"{(t2 - compute) * 1e3:>17.2f}")
    print(f"\nload average before / after: {load_before} / {os.getloadavg()[0]:.2f} "
          f"(2 ranks need 2 idle cores; anything else running inflates the 2-rank times)")


if __name__ == "__main__":
    main()
