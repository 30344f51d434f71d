"""Less sensitivity to initialization, as in CS231n's "Batch normalization and initialization"
experiment: seven hidden layers of 50 ReLU units, every weight drawn from N(0, s^2) for 20 scales s in
logspace(-4, 0), trained with and without batch norm (Adam at 1e-3, batches of 50, 10 epochs over 1000
training images). Reported for each scale: the best validation and training accuracy over the epochs, and
the final training loss (the mean of the last 100 steps).
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import Context, Report, fmt, markdown_table, pyplot, register_experiment, train
from normlab.models import FullyConnectedNet
from normlab.optim import Adam

HIDDEN = (50,) * 7
LABELS = {"none": "baseline", "batch": "batch norm"}


@register_experiment("init-scale", claim="batch norm makes networks less sensitive to the initial weight scale")
def run(ctx: Context) -> Report:
    scales = np.logspace(-4, 0, ctx.count(20, 10, minimum=3))
    settings = {"hidden": HIDDEN, "activation": "relu", "weight_scales": scales, "optimizer": "adam", "lr": 1e-3,
                "batch_size": 50, "epochs": ctx.count(10, 10, minimum=1), "n_train": ctx.count(1000, 1000, minimum=100),
                "n_val": ctx.count(1000, 500, minimum=50), "final_loss_steps": 100}
    data = ctx.data(settings["n_train"], settings["n_val"])
    runs: dict[str, list[dict]] = {"none": [], "batch": []}
    for scale in scales:
        for norm, rows in runs.items():
            model = FullyConnectedNet(int(np.prod(data.input_shape)), HIDDEN, len(data.classes), normalization=norm,
                                      weight_scale=float(scale), rng=ctx.rng("init"))
            r = train(model, Adam(model.parameters(), lr=1e-3), data, batch_size=50, rng=ctx.rng("order"),
                      epochs=settings["epochs"])
            epochs = r.history.epochs
            last = r.history.loss[-settings["final_loss_steps"]:]
            rows.append({
                "weight_scale": float(scale), "status": r.status,
                "best_val_acc": max((e.val_acc for e in epochs), default=None),
                "best_train_acc": max((e.train_acc for e in epochs), default=None),
                "final_loss": None if r.diverged or not last else float(np.mean(last)),
                "epochs_completed": len(epochs), "seconds": r.seconds,
            })
        ctx.log(f"init-scale: weight scale {scale:.2e}: best validation accuracy "
                f"{fmt(runs['none'][-1]['best_val_acc'])} without batch norm, {fmt(runs['batch'][-1]['best_val_acc'])} "
                "with")
    results = {"runs": runs, **_sensitivity(runs)}
    _plot(ctx, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _sensitivity(runs: dict[str, list[dict]]) -> dict:
    """For each network: how many scales reach within 0.05 of its best validation accuracy, and the worst
    best validation accuracy over the scales (a diverged run that never finished an epoch counts as 0.1,
    chance on ten classes)."""
    out = {}
    for norm, rs in runs.items():
        accs = [r["best_val_acc"] if r["best_val_acc"] is not None else 0.1 for r in rs]
        top = max(accs)
        good = [r["weight_scale"] for r, a in zip(rs, accs) if a >= top - 0.05]
        out[norm] = {"top_val_acc": top, "worst_val_acc": min(accs), "scales_within_0.05": len(good),
                     "good_scale_range": [min(good), max(good)]}
    return {"sensitivity": out}


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    runs = results["runs"]
    rows = []
    for base, bn in zip(runs["none"], runs["batch"]):
        rows.append([f"{base['weight_scale']:.2e}", fmt(base["best_val_acc"]), fmt(bn["best_val_acc"]),
                     fmt(base["best_train_acc"]), fmt(bn["best_train_acc"]), fmt(base["final_loss"], ".3f"),
                     fmt(bn["final_loss"], ".3f")])
    table = markdown_table(["weight scale", "best val acc (baseline)", "best val acc (BN)", "best train acc (baseline)",
                            "best train acc (BN)", "final loss (baseline)", "final loss (BN)"], rows)
    sens = results["sensitivity"]
    n = len(runs["none"])
    lines = []
    for norm in ("none", "batch"):
        s = sens[norm]
        lo, hi = s["good_scale_range"]
        lines.append(f"- {LABELS[norm]}: {s['scales_within_0.05']} of {n} scales reach within 0.05 of its best "
                     f"validation accuracy ({s['top_val_acc']:.4f}), between {lo:.1e} and {hi:.1e}; its worst "
                     f"scale reaches {s['worst_val_acc']:.4f}.")
    holds = sens["batch"]["scales_within_0.05"] > sens["none"]["scales_within_0.05"]
    verdict = ("Less sensitivity to the initial scale holds: batch norm trains well over a wider range of scales."
               if holds else "Less sensitivity to the initial scale does not hold here: batch norm does not train "
               "well over a wider range of scales than the baseline.")
    diverged = [f"{r['weight_scale']:.1e} ({LABELS[norm]})" for norm, rs in runs.items() for r in rs
                if r["status"] == "diverged"]
    if diverged:
        verdict += f" Diverged (the loss became NaN or infinite): {', '.join(diverged)}."
    return f"""Setting: {ctx.dataset}, {settings['n_train']} training and {settings['n_val']} validation images (CS231n
uses 1000 and 1000), seven hidden layers of 50 ReLU units, every weight drawn from N(0, s^2) for {n} scales s in
logspace(-4, 0) (one standard normal draw, multiplied by s, for every scale, with and without batch norm), Adam
at 1e-3, batches of 50,
{settings['epochs']} epochs. Accuracies are the best over the epochs (evaluation mode); the final loss is the
mean training loss of the last {settings['final_loss_steps']} steps.

{table}
{chr(10).join(lines)}

{verdict}
"""


def _plot(ctx: Context, results: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("best_val_acc", "best validation accuracy"), ("best_train_acc", "best training accuracy"),
              ("final_loss", "final training loss")]
    for ax, (key, title) in zip(axes, panels):
        for norm, style in (("none", "o-"), ("batch", "s-")):
            rs = results["runs"][norm]
            ax.plot([r["weight_scale"] for r in rs], [np.nan if r[key] is None else r[key] for r in rs], style,
                    label=LABELS[norm])
        ax.set_xscale("log")
        ax.set(xlabel="weight initialization scale", title=title)
        ax.legend(loc="best", fontsize="small")
    axes[2].set_yscale("log")
    fig.suptitle(f"Initialization scale: 7 x 50 ReLU, Adam 1e-3 ({ctx.dataset}, CS231n's setting)")
    ctx.save_figure(fig, "init_scale.png")
