"""Small batches, as in the group norm paper's Figure 1 (Wu & He, 2018): validation error against the batch
size for batch norm, layer norm, group norm, batch renormalization and ghost batch norm, every run seeing
the same number of examples with the learning rate scaled linearly with the batch size.

Two choices that short runs need, stated in the summary:
- Batch renorm relaxes rmax and dmax over Ioffe's 5000 -> 40000 / 25000 steps of a long run; here the same
  fractions of each run's own length (plain batch norm for the first 5 % of the steps, rmax reaching 3 at
  40 %, dmax reaching 5 at 25 %).
- Ghost batch norm normalizes virtual batches of 16: for batches of 16 or fewer it is batch norm.
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import Context, Report, fmt, markdown_table, pyplot, register_experiment, train
from normlab.models import FullyConnectedNet
from normlab.nn import RenormSchedule
from normlab.optim import SGD, Cosine

HIDDEN = (256, 256)
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128)
NORMALIZATIONS = ("batch", "layer", "group", "renorm", "ghost")
LABELS = {"batch": "batch norm", "layer": "layer norm", "group": "group norm (32 groups)",
          "renorm": "batch renorm", "ghost": "ghost batch norm (16)"}
VIRTUAL_BATCH = 16
BASE_LR, BASE_BATCH = 0.02, 32  # lr = BASE_LR * batch / BASE_BATCH (the linear scaling rule)


def renorm_schedule(total_steps: int) -> RenormSchedule:
    """Ioffe's schedule (warm-up 5000, rmax full at 40000, dmax full at 25000 steps) read as fractions of a
    100000-step run and scaled to `total_steps`."""
    return RenormSchedule(warmup_steps=round(0.05 * total_steps), rmax_full_at=round(0.40 * total_steps),
                          dmax_full_at=round(0.25 * total_steps))


@register_experiment("batch-size", claim="batch norm behaves poorly with very small batches; its relatives do not")
def run(ctx: Context) -> Report:
    sizes = ctx.pick(BATCH_SIZES, (2, 8, 32, 128))
    settings = {"hidden": HIDDEN, "activation": "relu", "weight_scale": "he", "batch_sizes": sizes,
                "normalizations": ctx.pick(NORMALIZATIONS, NORMALIZATIONS), "optimizer": "sgd", "momentum": 0.9,
                "lr": {str(b): BASE_LR * b / BASE_BATCH for b in sizes}, "schedule": "cosine",
                "epochs": ctx.count(3, 2), "n_train": ctx.count(10_000, 4000, minimum=256),
                "n_val": ctx.count(5000, 1000, minimum=100), "virtual_batch_size": VIRTUAL_BATCH,
                "renorm_momentum": 0.01, "group_norm_groups": 32}
    data = ctx.data(settings["n_train"], settings["n_val"])
    runs: dict[str, dict[str, dict]] = {}
    for norm in settings["normalizations"]:
        runs[norm] = {}
        for b in sizes:
            total = settings["epochs"] * -(-len(data.x_train) // b)
            schedule = renorm_schedule(total)
            model = FullyConnectedNet(int(np.prod(data.input_shape)), HIDDEN, len(data.classes), normalization=norm,
                                      renorm_schedule=schedule, virtual_batch_size=VIRTUAL_BATCH,
                                      rng=ctx.rng("init"))
            r = train(model, SGD(model.parameters(), lr=settings["lr"][str(b)], momentum=0.9), data, batch_size=b,
                      rng=ctx.rng("order"), epochs=settings["epochs"], schedule=Cosine(total))
            epochs = r.history.epochs
            final = epochs[-1].val_acc if epochs and not r.diverged else None
            runs[norm][str(b)] = {
                "status": r.status, "steps": r.steps, "seconds": r.seconds,
                "val_error": None if final is None else 1.0 - final,
                "best_val_error": 1.0 - max(e.val_acc for e in epochs) if epochs else None,
                "train_error": None if final is None else 1.0 - epochs[-1].train_acc,
            }
            if norm == "renorm":
                runs[norm][str(b)]["renorm_schedule"] = {"warmup_steps": schedule.warmup_steps,
                                                         "rmax_full_at": schedule.rmax_full_at,
                                                         "dmax_full_at": schedule.dmax_full_at}
        ctx.log(f"batch-size: {LABELS[norm]}: validation error " + ", ".join(
            f"{b}: {fmt(runs[norm][str(b)]['val_error'], '.3f')}" for b in sizes))
    results = {"runs": runs}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    sizes, runs = settings["batch_sizes"], results["runs"]

    def pct(v):
        return fmt(None if v is None else 100 * v, ".1f")

    rows = [[LABELS[norm], *[pct(runs[norm][str(b)]["val_error"]) for b in sizes]] for norm in runs]
    table = markdown_table(["validation error (%)", *[f"batch {b}" for b in sizes]], rows)
    small, large = str(min(sizes)), str(max(sizes))
    lines = []
    bn = runs.get("batch")
    if bn:
        e_small, e_large = bn[small]["val_error"], bn[large]["val_error"]
        worse = e_small is None or (e_large is not None and e_small > e_large + 0.01)
        lines.append(f"- Batch norm at batch {small}: {pct(e_small)} % error against {pct(e_large)} % at batch "
                     f"{large}: the small-batch claim {'holds' if worse else 'does not hold here'}.")
    for norm in ("layer", "group", "renorm", "ghost"):
        if norm in runs and bn:
            mine, theirs = runs[norm][small]["val_error"], bn[small]["val_error"]
            own_large = runs[norm][large]["val_error"]
            if norm == "ghost" and int(small) <= VIRTUAL_BATCH:
                verdict = (f"the same computation as batch norm, since the batch fits in one virtual batch of "
                           f"{VIRTUAL_BATCH}")
            else:
                better = mine is not None and (theirs is None or mine < theirs - 0.01)
                steady = mine is not None and own_large is not None and mine <= own_large + 0.01
                verdict = (f"{'better' if better else 'not better'}, and "
                           f"{'no worse than' if steady else 'worse than'} its own {pct(own_large)} % at batch {large}")
            lines.append(f"- {LABELS[norm].capitalize()} at batch {small}: {pct(mine)} % against batch norm's "
                         f"{pct(theirs)} %: {verdict}.")
    n_train = settings["n_train"]
    return f"""Setting: {ctx.dataset}, {n_train} training and {settings['n_val']} validation images, a fully connected network
of two hidden layers of 256 ReLU units with each normalization after each hidden layer, SGD with momentum 0.9,
learning rate {BASE_LR} x batch / {BASE_BATCH} (the linear scaling rule, as the group norm paper) with cosine
decay, {settings['epochs']} epochs at every batch size (the same number of examples seen). The error is measured
after the last epoch, in evaluation mode (batch norm and its variants use their running statistics).

Batch renorm: Ioffe's rmax/dmax schedule scaled to each run's length (plain batch norm for the first 5 % of the
steps, rmax reaching 3 at 40 % and dmax reaching 5 at 25 %), running statistics with its default momentum
0.01 (Keras's renorm_momentum 0.99). Ghost batch norm: virtual batches of {VIRTUAL_BATCH}, so for batches of {VIRTUAL_BATCH} or
fewer it computes exactly batch norm. Group norm: 32 groups of 8 features.

{table}
{chr(10).join(lines)}
"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sizes = settings["batch_sizes"]
    markers = dict(zip(NORMALIZATIONS, "osD^v"))
    for norm, runs in results["runs"].items():
        errors = [runs[str(b)]["val_error"] for b in sizes]
        # Ghost batch norm is batch norm up to its virtual batch size: dashed, so both lines show.
        style = {"ls": "--", "lw": 1.5} if norm == "ghost" else {"lw": 3 if norm == "batch" else 1.5}
        ax.plot(sizes, [np.nan if e is None else 100 * e for e in errors], marker=markers[norm], label=LABELS[norm],
                **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.invert_xaxis()  # as the group norm paper: batch size shrinking to the right
    ax.set(xlabel="batch size", ylabel="validation error (%)",
           title=f"Validation error against batch size ({ctx.dataset}, 2 x 256 ReLU)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    ctx.save_figure(fig, "batch_size.png")
