"""Regularization: does batch norm reduce overfitting, as the batch norm paper says (so that dropout can be
removed or reduced)?

An experiment can only detect regularization where regularization matters, so it starts with a positive
control: a setting (few training images, a wide network, long training) where dropout's gain in validation
accuracy is real, i.e. its 95% interval excludes zero. In that same setting it measures batch norm's gain,
and how it changes with the batch size: the claimed mechanism is the noise of each batch's statistics, which
shrinks as batches grow. Every batch size has its own baseline (the same initial weights and examples seen),
so each gain is a paired difference at equal batch size.
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import (
    Context,
    Report,
    comparison_table,
    markdown_table,
    mlp,
    nested,
    pyplot,
    register_experiment,
    status_of,
    train,
)
from normlab.experiments.stats import (
    comparison,
    curves_band,
    error_bars,
    format_interval,
    mean_interval,
    paired_difference,
    paired_values,
)
from normlab.experiments.status import failures
from normlab.experiments.sweep import RunSpec
from normlab.optim import Adam

HIDDEN = (512, 512)
DROPOUT = 0.5
BATCH = 100  # the main batch size; the others test the noise mechanism
ARMS = {"baseline": ("none", 0.0), "dropout": ("none", DROPOUT), "batch norm": ("batch", 0.0),
        "batch norm + dropout": ("batch", DROPOUT)}
NOISE_BATCHES = (20, 500)  # baseline and batch norm also at these batch sizes


def train_one(spec: RunSpec) -> dict:
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    norm, p = ARMS[c["arm"]]
    model = mlp(spec, data, HIDDEN, normalization=norm, dropout=p)
    r = train(model, Adam(model.parameters(), lr=c["lr"]), data, batch_size=c["batch_size"], rng=spec.rng("order"),
              epochs=c["epochs"], train_eval_size=c["n_train"])
    epochs = r.history.epochs
    ok = epochs and not r.diverged
    return {"status": status_of(r, None, 1 / len(data.classes)), "epochs": [e.epoch for e in epochs],
            "train_acc": [e.train_acc for e in epochs], "val_acc": [e.val_acc for e in epochs],
            "final_train_acc": epochs[-1].train_acc if ok else None,
            "final_val_acc": epochs[-1].val_acc if ok else None,
            "best_val_acc": max(e.val_acc for e in epochs) if epochs else None,
            "final_gap": epochs[-1].train_acc - epochs[-1].val_acc if ok else None, "seconds": r.seconds}


@register_experiment("regularization", claim="batch norm regularizes, reducing the need for dropout")
def run(ctx: Context) -> Report:
    settings = {"hidden": HIDDEN, "activation": "relu", "weight_scale": "he", "dropout": DROPOUT, "optimizer": "adam",
                "lr": 1e-3, "batch_size": BATCH, "noise_batch_sizes": NOISE_BATCHES,
                "epochs": ctx.count(40, 8, minimum=2), "n_train": ctx.count(1000, 500, minimum=200),
                "n_val": ctx.count(3000, 1000, minimum=100)}
    base = {k: settings[k] for k in ("lr", "epochs", "n_train", "n_val")}
    configs = [{**base, "arm": arm, "batch_size": BATCH} for arm in ARMS]
    configs += [{**base, "arm": arm, "batch_size": b} for b in NOISE_BATCHES for arm in ("baseline", "batch norm")]
    runs = nested(configs, ctx.runs(train_one, configs), "batch_size", "arm")

    def values(b, arm, key):
        return [r[key] for r in runs[str(b)][arm]]

    comparisons = {}

    def compare(name, a, b, predicted="positive"):
        comparisons[name] = comparison(a, b, predicted, spec="+.1f", scale=100).to_dict()

    # At batch BATCH: the gains in accuracy are predicted positive, the gap's change negative.
    measures = {"best_val_acc": "best val acc", "final_val_acc": "final val acc", "final_gap": "final gap"}
    for prefix, a, b, keys in (("positive control: ", "dropout", "baseline", measures),
                               ("", "batch norm", "baseline", measures),
                               ("", "batch norm + dropout", "batch norm", ["best_val_acc"])):
        for key in keys:
            compare(f"{prefix}{a} - {b}, {measures[key]}", values(BATCH, a, key), values(BATCH, b, key),
                    "negative" if key == "final_gap" else "positive")
    gains = {}
    for b in (NOISE_BATCHES[0], BATCH, NOISE_BATCHES[1]):
        gains[str(b)] = paired_values(values(b, "batch norm", "best_val_acc"), values(b, "baseline", "best_val_acc"))
        if b != BATCH:
            compare(f"batch {b}: batch norm - baseline, best val acc", values(b, "batch norm", "best_val_acc"),
                    values(b, "baseline", "best_val_acc"))
    small, large = map(str, NOISE_BATCHES)
    compare(f"batch norm's gain in best val acc at batch {small} - at batch {large}", gains[small], gains[large])
    results = {"seeds": list(ctx.seeds), "runs": runs, "gains": gains, "comparisons": comparisons}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _anchor(name: str, comparison: dict) -> str:
    if name.startswith("batch norm - baseline"):
        return "BN paper: BN-Inception trains without dropout, no loss (ImageNet, no figure for this alone)"
    if name.startswith("positive control: dropout - baseline, best val acc"):
        return "Srivastava et al. 2014: dropout cuts MNIST MLP error 1.6 -> 1.25 %"
    return "—"


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    runs, n = results["runs"], len(ctx.seeds)
    rows = []
    for b, arms in runs.items():
        for arm, rs in arms.items():
            rows.append([f"{arm}, batch {b}",
                         *[format_interval(mean_interval([r[k] for r in rs]), scale=100, unit=" %", n=False)
                           for k in ("final_train_acc", "final_val_acc", "best_val_acc")],
                         format_interval(mean_interval([r["final_gap"] for r in rs]), scale=100, unit=" points",
                                         n=False), failures(rs)])
    table = markdown_table([f"network (n = {n})", "final train acc", "final val acc", "best val acc",
                            "final gap (train - val)", "runs"], rows)
    comp_table = comparison_table(results["comparisons"], "paired difference", _anchor)
    control = results["comparisons"]["positive control: dropout - baseline, best val acc"]["verdict"]
    power = ("The positive control holds: in this setting a real regularizer shows as a gain whose interval "
             "excludes zero, so the batch norm rows can detect one." if control == "holds" else
             f"The positive control's verdict is {control}: this setting does not show dropout's gain, so it has "
             "no demonstrated power to detect a regularizer, and the batch norm rows cannot support \"does not "
             "regularize\".")
    return f"""Setting: {ctx.dataset}, {settings['n_train']} training images (few, so that the networks overfit) and
{settings['n_val']} validation images (the split drawn by the seed), a fully connected network of two hidden
layers of 512 ReLU units (He initialization), with and without batch norm and dropout (p = {DROPOUT}, after
each hidden layer), Adam at 1e-3 without decay, {settings['epochs']} epochs at batch {BATCH}, and baseline and
batch norm also at batches {' and '.join(map(str, NOISE_BATCHES))} (the same epochs, so the same examples
seen). Seeds {', '.join(map(str, ctx.seeds))} (n = {n}), each drawing the initial weights (shared by every
arm), the batch order and the split. Accuracies in evaluation mode after every epoch, the training accuracy on
all the training images; "best val acc" is the best epoch's (what early stopping keeps), "final" the last
epoch's; the gap is training minus validation accuracy after the last epoch. Cells: mean ± 95% CI half-width.
The gains at batches {' and '.join(map(str, NOISE_BATCHES))} are paired with the baseline at the same batch
size; at batch {NOISE_BATCHES[1]} the {settings['epochs']} epochs are only
{settings['epochs'] * -(-settings['n_train'] // NOISE_BATCHES[1])} steps, so both arms there are less trained.

{power}

{table}
{comp_table}
Anchor: Ioffe & Szegedy (2015), section 3.4 and 4.2.1: batch norm "regularizes the model and reduces the need
for dropout"; BN-Inception drops dropout without losing accuracy. What differs: no ImageNet-scale experiment
isolates batch norm's regularization there; here it is measured directly on an MLP that overfits.
"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plt = pyplot()
    fig, (ax_acc, ax_gain) = plt.subplots(1, 2, figsize=(13, 4.4))
    colors = dict(zip(ARMS, ("tab:gray", "tab:green", "tab:blue", "tab:purple")))
    for arm, rs in results["runs"][str(BATCH)].items():
        epochs = rs[0]["epochs"]
        curves_band(ax_acc, epochs, [r["val_acc"] for r in rs], scale=100, color=colors[arm],
                    label=f"{arm}: validation")
        train_mean = np.mean([r["train_acc"] for r in rs if len(r["train_acc"]) == len(epochs)], axis=0)
        ax_acc.plot(epochs, 100 * train_mean, "--", color=colors[arm], lw=0.8)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)",
               title=f"batch {BATCH}: validation (solid, 95% CI band) and training (dashed)")
    ax_acc.title.set_fontsize("medium")
    ax_acc.legend(loc="lower right", fontsize="x-small")
    sizes = sorted(int(b) for b in results["gains"])
    ivs = [mean_interval(results["gains"][str(b)]) for b in sizes]
    error_bars(ax_gain, sizes, ivs, scale=100, fmt="s-", color="tab:blue", capsize=4,
               label="batch norm - baseline (mean ± 95% CI)")
    dropout = paired_difference([r["best_val_acc"] for r in results["runs"][str(BATCH)]["dropout"]],
                                [r["best_val_acc"] for r in results["runs"][str(BATCH)]["baseline"]])
    if dropout.defined:
        error_bars(ax_gain, [BATCH * 1.05], [dropout], scale=100, fmt="o", color="tab:green", capsize=4,
                   label="dropout - baseline (positive control)")
    ax_gain.axhline(0, color="black", lw=0.8)
    ax_gain.set_xscale("log")
    ax_gain.minorticks_off()  # only the batch sizes run
    ax_gain.set_xticks(sizes, [str(b) for b in sizes])
    ax_gain.set(xlabel="batch size", ylabel="gain in best validation accuracy (points)",
                title=f"paired gains over the baseline at each batch size (n = {len(ctx.seeds)})")
    ax_gain.title.set_fontsize("medium")
    ax_gain.legend(loc="best", fontsize="x-small")
    fig.suptitle(f"Regularization: 2 x 512 ReLU on {settings['n_train']} {ctx.dataset} images, Adam 1e-3")
    ctx.save_figure(fig, "regularization.png")
