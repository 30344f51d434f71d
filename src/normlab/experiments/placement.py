"""Placement: batch norm before the nonlinearity (the batch norm paper's g(BN(W u)), Ioffe & Szegedy 2015,
section 3.2) or after it (BN(g(W u)), which practitioners often report works better), against no batch norm,
for ReLU and for the sigmoid.

The design, so that the arms differ only in the placement:
- Within a seed every arm starts from the same initial weights (one draw, the normalization layers start at
  gamma = 1, beta = 0), sees the same batches in the same order and is held out on the same split, so the
  differences are paired.
- One optimizer and learning rate for every arm (SGD with momentum, cosine decay): batch norm would allow a
  higher rate, which the learning-rate experiment measures; here the question is only where it goes.
- Two measures: the validation accuracy after the last step (where training ends), and its mean over the
  evaluations during training (how fast it got there).
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
from normlab.experiments.stats import Interval, comparison, curves_band, error_bars, format_interval, mean_interval
from normlab.experiments.status import failures
from normlab.experiments.sweep import RunSpec
from normlab.nn import PLACEMENTS
from normlab.optim import SGD, Cosine

HIDDEN = (100, 100, 100)  # the batch norm paper's MNIST network
ACTIVATIONS = ("relu", "sigmoid")
ARMS = ("none", *PLACEMENTS)  # no batch norm, batch norm before / after the nonlinearity
LABELS = {"none": "no batch norm", "before": "batch norm before the nonlinearity",
          "after": "batch norm after the nonlinearity"}
BATCH, LR, MOMENTUM = 60, 0.02, 0.9
MEASURES = {"final_val_acc": "final val acc", "mean_val_acc": "mean val acc over the run"}
# Mishkin's caffenet-benchmark (batchnorm.md): CaffeNet on ImageNet at 128 px, ReLU, one run each.
CAFFENET = "CaffeNet128, ImageNet (Mishkin): before 47.4 %, after 49.9 % top-1 (after better by 2.5 points)"


def train_one(spec: RunSpec) -> dict:
    """One activation and one arm: validation accuracy every `every` steps, in evaluation mode."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    arm = c["arm"]
    normalization, placement = ("none", "before") if arm == "none" else ("batch", arm)
    model = mlp(spec, data, HIDDEN, normalization=normalization, placement=placement, activation=c["activation"])
    every = max(1, c["steps"] // c["evaluations"])
    r = train(model, SGD(model.parameters(), lr=c["lr"], momentum=MOMENTUM), data, batch_size=BATCH,
              rng=spec.rng("order"), steps=c["steps"], schedule=Cosine(c["steps"]), every=every,
              train_eval_size=1000, probe=lambda trainer: {"val_acc": trainer.accuracy(data.x_val, data.y_val)})
    status = status_of(r, "val_acc", 1 / len(data.classes))
    steps, acc = r.series("val_acc")
    done = not r.diverged
    return {"status": status, "steps": steps, "val_acc": acc,
            "final_val_acc": acc[-1] if done else None,
            "mean_val_acc": float(np.mean(acc[1:])) if done else None,  # the evaluations after step 0
            "seconds": r.seconds}


@register_experiment("placement", claim="batch norm works best before the nonlinearity, as the paper places it")
def run(ctx: Context) -> Report:
    settings = {"hidden": HIDDEN, "activations": ACTIVATIONS, "arms": ARMS, "weight_scale": "he",
                "optimizer": "sgd", "lr": LR, "momentum": MOMENTUM, "schedule": "cosine", "batch_size": BATCH,
                "steps": ctx.count(5000, 600, minimum=20), "evaluations": 20,
                "n_train": ctx.count(None, 10_000, minimum=300), "n_val": ctx.count(5000, 1000, minimum=100)}
    configs = [{"activation": act, "arm": arm, **{k: settings[k] for k in ("steps", "evaluations", "n_train",
                                                                           "n_val", "lr")}}
               for act in ACTIVATIONS for arm in ARMS]
    runs = nested(configs, ctx.runs(train_one, configs), "activation", "arm")

    def values(act, arm, key):
        return [r[key] for r in runs[act][arm]]

    comparisons = {}
    for act in ACTIVATIONS:
        for a, b in (("before", "after"), ("before", "none"), ("after", "none")):
            for key, label in MEASURES.items():
                comparisons[f"{act}: {a} - {b}, {label}"] = {
                    "activation": act, "arms": [a, b], "measure": key,
                    **comparison(values(act, a, key), values(act, b, key), spec="+.1f", scale=100).to_dict()}
    table = {act: {arm: {key: mean_interval(values(act, arm, key)).to_dict() for key in MEASURES} for arm in ARMS}
             for act in ACTIVATIONS}
    for act in ACTIVATIONS:
        ctx.log(f"placement: {act}: " + ", ".join(
            f"{arm} {format_interval(Interval(**table[act][arm]['final_val_acc']), scale=100, n=False)}"
            for arm in ARMS))
    results = {"seeds": list(ctx.seeds), "runs": runs, "table": table, "comparisons": comparisons}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _anchor(name: str, comparison: dict) -> str:
    if name.startswith("relu: before - after"):
        return f"BN paper: before (no number for after); {CAFFENET}"
    if name.startswith("sigmoid: before - after"):
        return "BN paper: before, on a sigmoid MNIST network (no number for after)"
    if name.startswith("sigmoid") and "- none" in name:
        return "BN paper Fig. 1: BN (before) trains faster and higher than none, sigmoid MNIST MLP (a plot, no number)"
    return "—"


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    runs, table, n = results["runs"], results["table"], len(ctx.seeds)
    rows = []
    for act in ACTIVATIONS:
        for arm in ARMS:
            rows.append([f"{act}, {LABELS[arm]}",
                         *[format_interval(Interval(**table[act][arm][key]), scale=100, unit=" %", n=False)
                           for key in MEASURES], failures(runs[act][arm])])
    acc_table = markdown_table([f"network (n = {n})", "final val acc", "mean val acc over the run", "runs"], rows)
    comp_table = comparison_table(results["comparisons"], "paired difference of validation accuracy", _anchor)
    n_train = settings["n_train"] or "all the"
    return f"""Setting: {ctx.dataset}, {n_train} training and {settings['n_val']} validation images (the split drawn
by the seed), a fully connected network of three hidden layers of 100 units (the batch norm paper's MNIST
network), ReLU or sigmoid, He initialization, with no batch norm, batch norm before the nonlinearity
(Linear - BN - g) or after it (Linear - g - BN) in every hidden layer; SGD with momentum {MOMENTUM} at
{LR} for every arm with cosine decay, batches of {BATCH}, {settings['steps']} steps. Seeds
{', '.join(map(str, ctx.seeds))} (n = {n}), each drawing the initial weights (shared by the three arms of an
activation), the batch order and the split. Validation accuracy in evaluation mode (running statistics)
{settings['evaluations']} times during training; "final" is after the last step, "mean over the run" the mean
of those evaluations (how fast it learned). Cells: mean ± 95% CI half-width.

{acc_table}
{comp_table}
Anchors. Ioffe & Szegedy (2015), section 3.2, place batch norm before the nonlinearity ("we add the BN
transform immediately before the nonlinearity, by normalizing x = Wu + b"), arguing that Wu + b is "more
likely to have a symmetric, non-sparse distribution"; they report no run with it after. Practitioners often
put it after: the Keras author wrote that "recent code written by Christian [Szegedy] applies relu before BN",
adding that "it is still occasionally a topic of debate" (keras-team/keras#1802, 2016, no number); Mishkin's
caffenet-benchmark measured {CAFFENET.split(': ', 1)[1]} (one run each; BN without its scale and bias; 47.8 vs
49.3 % with them); fast.ai forum threads report "after" as often better but also no clear difference on MNIST
(no numbers). What differs here: a small MLP on {ctx.dataset} rather than a CNN on ImageNet, {n} paired seeds
rather than single runs, and one learning rate for every arm.
"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(ACTIVATIONS) + 1, figsize=(17, 4.6))
    colors = {"none": "tab:gray", "before": "tab:blue", "after": "tab:orange"}
    for ax, act in zip(axes, ACTIVATIONS):
        shown = []  # the mean curves after step 0, to frame them (a band at n = 2 spans far beyond)
        for arm in ARMS:
            rs = [r for r in results["runs"][act][arm] if r["final_val_acc"] is not None]
            if not rs:
                continue
            curves_band(ax, rs[0]["steps"], [r["val_acc"] for r in rs], scale=100, color=colors[arm], label=LABELS[arm])
            shown += [100 * np.mean(column) for column in zip(*[r["val_acc"][1:] for r in rs])]
        ax.set(xlabel="training step", ylabel="validation accuracy (%)",
               title=f"{act}: mean and 95% CI band over {len(ctx.seeds)} seeds")
        if shown:
            ax.set_ylim(max(0.0, min(shown) - 5), min(100.0, max(shown) + 3))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="x-small")
    ax = axes[-1]
    pairs = (("before", "after"), ("before", "none"), ("after", "none"))
    for i, act in enumerate(ACTIVATIONS):
        ivs = [Interval(**results["comparisons"][f"{act}: {a} - {b}, final val acc"]["difference"]) for a, b in pairs]
        xs = np.arange(len(pairs)) + (i - 0.5) * 0.2
        error_bars(ax, xs, ivs, scale=100, fmt="os"[i], capsize=4, label=act)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(pairs)), [f"{a} - {b}" for a, b in pairs])
    ax.set(xlabel="paired difference (same seed)", ylabel="final validation accuracy difference (points)",
           title="paired differences, mean ± 95% CI")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best", fontsize="x-small")
    for ax in axes:
        ax.title.set_fontsize("medium")
    fig.suptitle(f"Batch norm before vs after the nonlinearity: 3 x 100 units on {ctx.dataset}, SGD {LR}, "
                 f"batch {BATCH}, {settings['steps']} steps")
    ctx.save_figure(fig, "placement.png")
