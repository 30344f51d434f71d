"""Regularization: the gap between training and validation accuracy with and without batch norm, with
and without dropout, on a training set small enough to overfit. The batch norm paper reports that batch
norm regularizes, so that dropout can be removed or reduced.
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import Context, Report, fmt, markdown_table, pyplot, register_experiment, train
from normlab.models import FullyConnectedNet
from normlab.optim import Adam

HIDDEN = (512, 512)
DROPOUT = 0.5
CONFIGS = {"baseline": ("none", 0.0), "dropout": ("none", DROPOUT), "batch norm": ("batch", 0.0),
           "batch norm + dropout": ("batch", DROPOUT)}
# Differences of accuracy smaller than this are not called differences: the standard error of an accuracy
# near 0.85 on 5000 validation images is 0.005.
MARGIN = 0.005


@register_experiment("regularization", claim="batch norm regularizes, reducing the need for dropout")
def run(ctx: Context) -> Report:
    settings = {"hidden": HIDDEN, "activation": "relu", "weight_scale": "he", "dropout": DROPOUT, "optimizer": "adam",
                "lr": 1e-3, "batch_size": 100, "epochs": ctx.count(40, 15, minimum=2),
                "n_train": ctx.count(5000, 2000, minimum=200), "n_val": ctx.count(5000, 1000, minimum=100)}
    data = ctx.data(settings["n_train"], settings["n_val"])
    runs = {}
    for name, (norm, p) in CONFIGS.items():
        model = FullyConnectedNet(int(np.prod(data.input_shape)), HIDDEN, len(data.classes), normalization=norm,
                                  dropout=p, rng=ctx.rng("init"))
        r = train(model, Adam(model.parameters(), lr=1e-3), data, batch_size=100, rng=ctx.rng("order"),
                  epochs=settings["epochs"], train_eval_size=settings["n_train"])
        epochs = r.history.epochs
        best = max(epochs, key=lambda e: e.val_acc) if epochs else None
        runs[name] = {
            "normalization": norm, "dropout": p, "status": r.status, "seconds": r.seconds,
            "epochs": [e.epoch for e in epochs], "train_acc": [e.train_acc for e in epochs],
            "val_acc": [e.val_acc for e in epochs], "train_loss": [e.train_loss for e in epochs],
            "final_train_acc": epochs[-1].train_acc if epochs else None,
            "final_val_acc": epochs[-1].val_acc if epochs else None,
            "final_gap": epochs[-1].train_acc - epochs[-1].val_acc if epochs else None,
            "best_val_acc": best.val_acc if best else None, "best_epoch": best.epoch if best else None,
            "gap_at_best": best.train_acc - best.val_acc if best else None,
        }
        ctx.log(f"regularization: {name}: train {fmt(runs[name]['final_train_acc'])}, validation "
                f"{fmt(runs[name]['final_val_acc'])} ({r.seconds:.0f} s)")
    results = {"runs": runs}
    _plot(ctx, results)
    return Report(settings, results, _summary(ctx, settings, results))


def compare(a: float, b: float, words: tuple[str, str], margin: float = MARGIN) -> str:
    """words[0] if a is below b by more than margin, words[1] if above, else "about the same"."""
    if a < b - margin:
        return words[0]
    return words[1] if a > b + margin else "about the same"


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    runs = results["runs"]
    rows = [[name, fmt(r["final_train_acc"]), fmt(r["final_val_acc"]), fmt(r["final_gap"]), fmt(r["best_val_acc"]),
             r["best_epoch"], fmt(r["gap_at_best"])] for name, r in runs.items()]
    table = markdown_table(["network", "final train acc", "final val acc", "final gap", "best val acc", "best epoch",
                            "gap at best"], rows)
    base, drop, bn, both = runs["baseline"], runs["dropout"], runs["batch norm"], runs["batch norm + dropout"]
    gap = compare(bn["final_gap"], base["final_gap"], ("smaller", "larger"))
    val = compare(bn["best_val_acc"], base["best_val_acc"], ("lower", "higher"))
    verdict = {2: "holds", 1: "holds in part", 0: "does not hold here"}[(gap == "smaller") + (val == "higher")]
    with_dropout = compare(both["best_val_acc"], bn["best_val_acc"], ("lower", "higher"))
    than = "as" if with_dropout == "about the same" else "than"
    lines = [
        (f"- Batch norm alone against the baseline: final gap {fmt(bn['final_gap'])} against "
         f"{fmt(base['final_gap'])} ({gap}), best validation accuracy {fmt(bn['best_val_acc'])} against "
         f"{fmt(base['best_val_acc'])} ({val}). The regularization claim {verdict}."),
        f"- Dropout alone: final gap {fmt(drop['final_gap'])}, best validation accuracy {fmt(drop['best_val_acc'])}.",
        (f"- Batch norm with dropout: final gap {fmt(both['final_gap'])}, best validation accuracy "
         f"{fmt(both['best_val_acc'])} ({with_dropout} {than} batch norm alone)."),
    ]
    return f"""Setting: {ctx.dataset}, {settings['n_train']} training images (few, so that the networks overfit) and
{settings['n_val']} validation images, a fully connected network of two hidden layers of 512 ReLU units (He
initialization, the same draw for every configuration), with and without batch norm and dropout
(p = {DROPOUT}, after each hidden layer), Adam at 1e-3 without decay, batches of 100, {settings['epochs']}
epochs. Accuracies are measured after each epoch in evaluation mode, the training accuracy on all the training
images; the gap is training minus validation accuracy. Differences under {MARGIN} are called "about the same".

{table}
{chr(10).join(lines)}
"""


def _plot(ctx: Context, results: dict) -> None:
    plt = pyplot()
    fig, (ax_acc, ax_gap) = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = dict(zip(CONFIGS, ("tab:gray", "tab:green", "tab:blue", "tab:purple")))
    for name, r in results["runs"].items():
        ax_acc.plot(r["epochs"], r["train_acc"], "--", color=colors[name], lw=1)
        ax_acc.plot(r["epochs"], r["val_acc"], "-", color=colors[name], label=name)
        ax_gap.plot(r["epochs"], np.subtract(r["train_acc"], r["val_acc"]), color=colors[name], label=name)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation (solid) and training (dashed) accuracy")
    ax_acc.legend(loc="lower right", fontsize="small")
    ax_gap.set(xlabel="epoch", ylabel="training - validation accuracy", title="generalization gap")
    ax_gap.legend(loc="upper left", fontsize="small")
    fig.suptitle(f"Regularization: 2 x 512 ReLU on {ctx.dataset}, Adam 1e-3")
    ctx.save_figure(fig, "regularization.png")
