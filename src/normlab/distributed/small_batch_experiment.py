"""Small per-process batches: batch norm with each process's own statistics against SyncBatchNorm.

    mpiexec -n 2 python3 -m normlab.distributed.small_batch_experiment --out docs/results/sync-batchnorm

Data-parallel training of a batch-normalized MLP on a Fashion-MNIST subset with per-rank batches of 2 to
4 (and 8, where the gap should close). "local" normalizes each rank's few samples with their own mean and
variance (what plain BatchNorm does under data parallelism); "sync" normalizes with the statistics of the
global batch (P x per-rank samples), which is single-process batch norm on the global batch. Everything
else is identical: the same initial weights, the same global batches in the same order, the same summed
gradients (so the parameters stay identical on every rank in both cases), the same SGD.

Test accuracy is measured in evaluation mode with rank 0's running statistics (with local batch norm the
ranks' running statistics differ, since each saw only its own samples; PyTorch's DDP evaluates rank 0's too).

Writes OUT/results.json (every run), OUT/summary.md (the table) and OUT/accuracy.png. --quick: a tiny run
for the tests (a subset of 400, two batch sizes, one seed), whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np

from normlab.data import Standardizer, batch_indices, epoch_order, load_dataset
from normlab.distributed.comm import Communicator, abort_on_error
from normlab.distributed.data_parallel import DataParallel
from normlab.files import atomic_write_bytes, atomic_write_json
from normlab.functional import softmax_cross_entropy
from normlab.models import build_model
from normlab.optim import SGD

KINDS = ("local", "sync")


def train_and_test(comm: Communicator, data: dict, *, per_rank_batch: int, sync: bool, seed: int, epochs: int,
                   lr: float, hidden: tuple[int, ...]) -> dict:
    """One data-parallel run; a collective operation. Returns its record (test accuracy on rank 0 only)."""
    x_train, y_train = data["x_train"], data["y_train"]  # (N, 1, 28, 28), (N,): the same on every rank
    init_rng, order_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    model = build_model("fcnet", input_shape=x_train.shape[1:], num_classes=10, rng=init_rng,
                        hidden_dims=hidden, normalization="batch")
    dp = DataParallel(model, comm, sync_batchnorm=sync)
    optimizer = SGD(dp.model.parameters(), lr=lr, momentum=0.9)
    global_batch = per_rank_batch * comm.size
    losses, started = [], time.perf_counter()
    dp.model.train()
    for _ in range(epochs):
        # Full global batches only: a last short one could leave a rank with one sample, which local batch
        # norm cannot normalize.
        for idx in batch_indices(epoch_order(len(x_train), order_rng), global_batch, drop_last=True):
            x, y = dp.shard(x_train[idx]), dp.shard(y_train[idx])  # (per_rank_batch, ...) each
            losses.append(dp.train_step(x, y, softmax_cross_entropy).loss)
            optimizer.step()
    seconds = time.perf_counter() - started
    test_acc = None
    if comm.is_root:
        dp.model.eval()
        predictions = np.concatenate([dp.model.forward(data["x_test"][idx]).argmax(axis=1)
                                      for idx in batch_indices(np.arange(len(data["x_test"])), 1000)])
        test_acc = float(np.mean(predictions == data["y_test"]))
    last = losses[-max(1, len(losses) // 10):]  # the last tenth of the steps
    return {"per_rank_batch": per_rank_batch, "global_batch": global_batch, "batchnorm": "sync" if sync else "local",
            "seed": seed, "steps": len(losses), "final_train_loss": float(np.mean(last)), "test_acc": test_acc,
            "seconds": seconds}


def load_data(train_size: int, test_size: int, data_dir: str | None) -> dict:
    ds = load_dataset("fashion-mnist", data_dir, download=False)
    standardize = Standardizer.fit(ds.x_train[:train_size])
    return {"x_train": standardize(ds.x_train[:train_size]), "y_train": ds.y_train[:train_size],
            "x_test": standardize(ds.x_test[:test_size]), "y_test": ds.y_test[:test_size]}


def summarize(records: list[dict], processes: int, settings: dict) -> str:
    """The markdown table: per-rank batch, global batch, mean test accuracy of each kind over the seeds."""
    setup = (f"Fashion-MNIST, {settings['train_size']} training examples, {settings['epochs']} epoch(s), "
             f"fcnet {settings['hidden']} with batch norm, SGD lr {settings['lr']} momentum 0.9, {processes} "
             f"processes; test accuracy on {settings['test_size']} test examples, mean (min-max) over "
             f"{len(settings['seeds'])} seed(s).")
    lines = [setup, "",
             "| per-rank batch | global batch | local BN accuracy | sync BN accuracy | sync - local |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for b in settings["per_rank_batches"]:
        accs = {k: [r["test_acc"] for r in records if r["per_rank_batch"] == b and r["batchnorm"] == k] for k in KINDS}
        cell = {k: f"{np.mean(a):.4f} ({min(a):.4f}-{max(a):.4f})" if len(a) > 1 else f"{a[0]:.4f}"
                for k, a in accs.items()}
        gap = np.mean(accs["sync"]) - np.mean(accs["local"])
        lines.append(f"| {b} | {b * processes} | {cell['local']} | {cell['sync']} | {gap:+.4f} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], processes: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind, color, label in (("local", "tab:red", "local batch norm (per-rank statistics)"),
                               ("sync", "tab:blue", "SyncBatchNorm (global statistics)")):
        mine = [r for r in records if r["batchnorm"] == kind]
        batches = sorted({r["per_rank_batch"] for r in mine})
        means = [np.mean([r["test_acc"] for r in mine if r["per_rank_batch"] == b]) for b in batches]
        ax.plot(batches, means, "o-", color=color, label=label)
        ax.scatter([r["per_rank_batch"] for r in mine], [r["test_acc"] for r in mine], color=color, alpha=0.35,
                   s=14)
    ax.set(xlabel=f"per-rank batch ({processes} processes)", ylabel="test accuracy",
           title="Data-parallel batch norm with small per-rank batches")
    ax.set_xticks(sorted({r["per_rank_batch"] for r in records}))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for results.json, summary.md, accuracy.png")
    parser.add_argument("--quick", action="store_true", help="a tiny run (for tests; the numbers mean nothing)")
    parser.add_argument("--per-rank-batches", type=int, nargs="+", default=[2, 3, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--data-dir", default=None, help="where Fashion-MNIST is (default: normlab's search path)")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_rank_batches, args.seeds, args.train_size, args.test_size = [2, 4], [0], 400, 1000
    with abort_on_error() as comm:
        if comm.size < 2:
            parser.error("needs several processes: mpiexec -n 2 python3 -m normlab.distributed.small_batch_experiment")
        if min(args.per_rank_batches) < 2:
            # With one sample per rank, local batch norm has nothing to normalize over.
            parser.error(f"--per-rank-batches must all be >= 2, got {args.per_rank_batches}")
        data = load_data(args.train_size, args.test_size, args.data_dir)
        settings = {"train_size": len(data["x_train"]), "test_size": len(data["x_test"]), "epochs": args.epochs,
                    "lr": args.lr, "hidden": list(args.hidden), "seeds": args.seeds,
                    "per_rank_batches": args.per_rank_batches, "quick": args.quick}
        records = []
        for b in args.per_rank_batches:
            for seed in args.seeds:
                for kind in KINDS:
                    record = train_and_test(comm, data, per_rank_batch=b, sync=kind == "sync", seed=seed,
                                            epochs=args.epochs, lr=args.lr, hidden=tuple(args.hidden))
                    records.append(record)
                    if comm.is_root:
                        print(f"per-rank batch {b}, seed {seed}, {kind:5s} BN: test acc {record['test_acc']:.4f} "
                              f"({record['steps']} steps, {record['seconds']:.1f} s)", flush=True)
        if comm.is_root:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "results.json", {"processes": comm.size, "settings": settings,
                                                     "runs": records})
            table = summarize(records, comm.size, settings)
            atomic_write_bytes(out / "summary.md", ("# Small per-rank batches: local batch norm vs SyncBatchNorm\n\n"
                                                    + table).encode())
            plot(records, comm.size, out / "accuracy.png")
            print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
