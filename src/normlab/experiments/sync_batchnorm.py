"""Small per-process batches under data parallelism: batch norm with each process's own statistics ("local",
what plain BatchNorm does under DDP) against SyncBatchNorm (statistics of the global batch), on the
project's data-parallel trainer (`normlab.distributed.DataParallel`).

Each run trains P = 2 ranks (threads of one process, `normlab.distributed.run_in_threads`: the same
collectives as under `mpiexec -n 2`, so a run is one task of the sweep). Both arms share everything but the
statistics: the initial weights, the global batches in the same order, the summed gradients, SGD. The
validation accuracy is measured in evaluation mode with rank 0's running statistics (with local batch norm
the ranks' running statistics differ; PyTorch's DDP evaluates rank 0's too). The claim (the SyncBatchNorm
docs, and the group norm paper's motivation): with a few samples per process, synchronizing the statistics
helps; with enough, it stops mattering.
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import Context, Report, markdown_table, mlp, nested, pyplot, register_experiment
from normlab.experiments.stats import (
    Interval,
    comparison,
    error_bars,
    format_difference,
    format_interval,
    mean_interval,
)
from normlab.experiments.status import failures, run_status
from normlab.experiments.sweep import RunSpec

PROCESSES = 2
KINDS = ("local", "sync")
LABELS = {"local": "local batch norm (per-rank statistics)", "sync": "SyncBatchNorm (global statistics)"}
HIDDEN = (256, 128)


def train_data_parallel(spec: RunSpec) -> dict:
    """One data-parallel run on PROCESSES thread ranks; returns rank 0's record."""
    from normlab.data import batch_indices, epoch_order
    from normlab.distributed import DataParallel, run_in_threads
    from normlab.functional import softmax_cross_entropy
    from normlab.optim import SGD

    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    global_batch = c["per_rank_batch"] * PROCESSES
    every = max(1, c["steps"] // c["evaluations"])

    def rank_main(comm) -> dict:
        model = mlp(spec, data, HIDDEN, normalization="batch")  # the same draw on every rank (broadcast anyway)
        dp = DataParallel(model, comm, sync_batchnorm=c["kind"] == "sync")
        optimizer = SGD(dp.model.parameters(), lr=c["lr"], momentum=0.9)
        order_rng = spec.rng("order")  # the same global batches on every rank
        steps, accs, losses, step = [0], [evaluate(dp.model, data)], [], 0
        while step < c["steps"]:
            # Full global batches only: a short last one could leave a rank with one sample.
            for idx in batch_indices(epoch_order(len(data.x_train), order_rng), global_batch, drop_last=True):
                dp.model.train()
                loss = dp.train_step(dp.shard(data.x_train[idx]), dp.shard(data.y_train[idx]),
                                     softmax_cross_entropy).loss
                optimizer.step()
                step += 1
                losses.append(loss)
                if not np.isfinite(loss):
                    return {"steps": steps, "val_acc": accs, "losses": losses}
                if step % every == 0 or step == c["steps"]:
                    steps.append(step)
                    accs.append(evaluate(dp.model, data) if comm.is_root else None)
                if step == c["steps"]:
                    break
        return {"steps": steps, "val_acc": accs, "losses": losses}

    record = run_in_threads(PROCESSES, rank_main)[0]
    losses = record.pop("losses")
    status = run_status(record["steps"], record["val_acc"], 1 / len(data.classes), losses)
    final = record["val_acc"][-1] if not status.startswith("diverged") else None
    return {**record, "status": status, "final_val_acc": final,
            "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 10):]))}


def evaluate(model, data) -> float:
    from normlab.data import batch_indices

    model.eval()
    predictions = np.concatenate([model.forward(data.x_val[idx]).argmax(axis=1)
                                  for idx in batch_indices(np.arange(len(data.x_val)), 1000)])
    return float(np.mean(predictions == data.y_val))


@register_experiment("sync-batchnorm", claim="with few samples per process, SyncBatchNorm beats local batch norm")
def run(ctx: Context) -> Report:
    batches = ctx.pick((2, 4, 8, 32), (2, 8))
    settings = {"processes": PROCESSES, "hidden": HIDDEN, "per_rank_batches": batches, "optimizer": "sgd",
                "momentum": 0.9, "lr": 0.01, "steps": ctx.count(1500, 300, minimum=20),
                "n_train": ctx.count(10_000, 2000, minimum=200), "n_val": ctx.count(5000, 1000, minimum=100),
                "evaluations": 10}
    common = {k: settings[k] for k in ("lr", "steps", "n_train", "n_val", "evaluations")}
    configs = [{"per_rank_batch": b, "kind": kind, **common} for b in batches for kind in KINDS]
    runs = nested(configs, ctx.runs(train_data_parallel, configs), "per_rank_batch", "kind")
    comparisons = {}
    for b in batches:
        local, sync = ([r["final_val_acc"] for r in runs[str(b)][k]] for k in KINDS)
        c = comparison(sync, local, scale=100, spec="+.1f")
        comparisons[str(b)] = {"local": mean_interval(local).to_dict(), "sync": mean_interval(sync).to_dict(),
                               "sync_minus_local": c.difference.to_dict(), "verdict": c.verdict}
        ctx.log(f"sync-batchnorm: per-rank batch {b}: sync - local {format_difference(c.difference, scale=100)} points")
    report = {"seeds": list(ctx.seeds), "runs": runs, "comparisons": comparisons}
    _plot(ctx, settings, report)
    return Report(settings, report, _summary(ctx, settings, report))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    rows = []
    for b in settings["per_rank_batches"]:
        c = results["comparisons"][str(b)]
        iv = {k: Interval(**c[k]) for k in ("local", "sync", "sync_minus_local")}
        rows.append([b, b * PROCESSES, format_interval(iv["local"], scale=100, unit=" %"),
                     format_interval(iv["sync"], scale=100, unit=" %"),
                     format_difference(iv["sync_minus_local"], scale=100, unit=" points"),
                     c["verdict"], failures(r for k in KINDS for r in results["runs"][str(b)][k])])
    table = markdown_table(["per-rank batch", "global batch", "local BN val acc", "sync BN val acc",
                            "sync - local (95% CI)", "verdict (sync > local)", "runs"], rows)
    small = str(min(settings["per_rank_batches"]))
    return f"""Setting: {ctx.dataset}, {settings['n_train']} training and {settings['n_val']} validation images (the split
drawn by the seed), a fully connected network {' x '.join(map(str, HIDDEN))} with batch norm, trained
data-parallel on {PROCESSES} ranks (`DataParallel`, thread ranks) for {settings['steps']} steps at every
per-rank batch, SGD at lr {settings['lr']} with momentum 0.9; seeds {', '.join(map(str, ctx.seeds))}
(n = {len(ctx.seeds)}): each seed draws the initial weights, the order of the global batches and the split,
the same in both arms. Validation accuracy after the last step, in evaluation mode with rank 0's running
statistics. Anchor: none quantitative (PyTorch's SyncBatchNorm documentation motivates it for small
per-GPU batches); the group norm paper's Table 3 shows batch norm losing 11 points from 32 to 2 images
per GPU on ImageNet.

{table}
At per-rank batch {small}: {results['comparisons'][small]['verdict']}.
"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    batches = settings["per_rank_batches"]
    for kind, color, offset in (("local", "tab:red", 0.97), ("sync", "tab:blue", 1.03)):
        ivs = [Interval(**results["comparisons"][str(b)][kind]) for b in batches]
        xs = [b * offset for b in batches]
        error_bars(ax, xs, ivs, scale=100, fmt="o-", color=color, capsize=4, label=f"{LABELS[kind]}, mean ± 95% CI")
        for b, x in zip(batches, xs):
            seeds = 100 * np.array([r["final_val_acc"] for r in results["runs"][str(b)][kind]], dtype=float)
            ax.scatter([x] * len(seeds), seeds, color=color, alpha=0.35, s=12)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set(xlabel=f"per-rank batch size ({PROCESSES} ranks)", ylabel="validation accuracy (%)",
           title=f"Data-parallel batch norm, n = {len(ctx.seeds)} seeds (dots: single seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ctx.save_figure(fig, "sync_batchnorm.png")

