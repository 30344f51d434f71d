"""Higher learning rates, in the spirit of the batch norm paper's Figure 3 (Ioffe & Szegedy, 2015): the
network without batch norm at its best learning rate (chosen from a small grid by validation accuracy)
against the batch-normalized network at 1x, 5x and 30x that rate. Reported: the steps each needs to reach
the baseline's best validation accuracy, and its own best. The paper reports that batch norm at 5x
reached Inception's best accuracy in 14 times fewer steps on ImageNet.
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import (
    Context,
    Report,
    first_step_reaching,
    fmt,
    markdown_table,
    pyplot,
    register_experiment,
    train,
)
from normlab.models import FullyConnectedNet
from normlab.optim import SGD

HIDDEN = (100, 100, 100)
GRID = (0.001, 0.003, 0.01, 0.03, 0.1)  # the baseline's learning rates
MULTIPLIERS = (1, 5, 30)  # batch norm's rates, as multiples of the baseline's best
WINDOW = 5  # evaluations averaged: a single evaluation's peak is noise, not the accuracy the network reached


def trailing_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the window - 1 before it (fewer at the start)."""
    sums = np.cumsum([0.0, *values])
    return [float((sums[i + 1] - sums[max(0, i + 1 - window)]) / min(window, i + 1)) for i in range(len(values))]


@register_experiment("learning-rate", claim="batch norm allows higher learning rates and needs fewer steps")
def run(ctx: Context) -> Report:
    steps = ctx.count(10_000, 1_500, minimum=20)
    settings = {"hidden": HIDDEN, "activation": "relu", "weight_scale": "he", "batch_size": 60, "steps": steps,
                "every": max(1, steps // 100), "optimizer": "sgd", "momentum": 0.9, "schedule": "constant",
                "baseline_grid": ctx.pick(GRID, GRID[1:4]), "multipliers": MULTIPLIERS,
                "n_train": ctx.count(None, 10_000, minimum=200), "n_val": ctx.count(5000, 1000, minimum=100)}
    data = ctx.data(settings["n_train"], settings["n_val"])

    def run_one(norm: str, lr: float) -> dict:
        model = FullyConnectedNet(int(np.prod(data.input_shape)), HIDDEN, len(data.classes), normalization=norm,
                                  rng=ctx.rng("init"))
        r = train(model, SGD(model.parameters(), lr=lr, momentum=0.9), data, batch_size=60, rng=ctx.rng("order"),
                  steps=steps, every=settings["every"],
                  probe=lambda trainer: {"val_acc": trainer.accuracy(data.x_val, data.y_val)})
        s, raw = r.series("val_acc")
        acc = trailing_mean(raw, WINDOW)
        best = max(acc)
        ctx.log(f"learning-rate: {'batch norm' if norm == 'batch' else 'baseline'} lr {lr:g}: "
                f"best validation accuracy {best:.4f}{' (diverged)' if r.diverged else ''} ({r.seconds:.0f} s)")
        return {"normalization": norm, "lr": lr, "status": r.status, "steps": s, "val_acc": raw,
                "val_acc_smoothed": acc, "best_val_acc": best,
                "step_of_best": first_step_reaching(s, acc, best), "seconds": r.seconds}

    baseline = [run_one("none", lr) for lr in settings["baseline_grid"]]
    chosen = max(baseline, key=lambda r: r["best_val_acc"])
    target, target_steps = chosen["best_val_acc"], chosen["step_of_best"]
    batchnorm = []
    for m in MULTIPLIERS:
        r = run_one("batch", chosen["lr"] * m)
        r["multiplier"] = m
        r["steps_to_target"] = first_step_reaching(r["steps"], r["val_acc_smoothed"], target)
        r["speedup"] = target_steps / r["steps_to_target"] if r["steps_to_target"] else None
        batchnorm.append(r)
    results = {"baseline": baseline, "best_lr": chosen["lr"], "target_acc": target, "target_steps": target_steps,
               "batchnorm": batchnorm}
    _plot(ctx, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    target, target_steps, lr = results["target_acc"], results["target_steps"], results["best_lr"]
    grid = markdown_table(["baseline lr", "best val acc", "at step", "status"],
                          [[f"{r['lr']:g}", fmt(r["best_val_acc"]), r["step_of_best"], r["status"]]
                           for r in results["baseline"]])
    rows = [[f"baseline, lr {lr:g}", target_steps, "1x", fmt(target), "completed"]]
    for r in results["batchnorm"]:
        reach = r["steps_to_target"]
        rows.append([f"batch norm, lr {r['lr']:g} ({r['multiplier']}x)", reach if reach is not None else "never",
                     fmt(r["speedup"], ".1f") + ("x" if r["speedup"] else ""), fmt(r["best_val_acc"]), r["status"]])
    table = markdown_table(["network", f"steps to {target:.4f}", "fewer steps", "best val acc", "status"], rows)
    reached = [r for r in results["batchnorm"] if r["speedup"]]
    if reached:
        best = max(reached, key=lambda r: r["speedup"])
        verdict = (f"Batch norm reached the baseline's best accuracy in {best['speedup']:.1f} times fewer steps "
                   f"(at {best['multiplier']}x the learning rate: {best['steps_to_target']} steps against "
                   f"{target_steps}); the paper reports 14x on ImageNet.")
    else:
        verdict = ("Batch norm did not reach the baseline's best accuracy at any of the three learning rates "
                   f"within {settings['steps']} steps: the claim does not hold in this setting.")
    never = [f"{r['multiplier']}x" for r in results["batchnorm"] if not r["speedup"]]
    if reached and never:
        verdict += f" At {', '.join(never)} it never did within {settings['steps']} steps."
    higher = [f"{r['multiplier']}x" for r in results["batchnorm"] if r["best_val_acc"] > target]
    verdict += (f" Its best accuracy beat the baseline's at {', '.join(higher)}." if higher
                else " Its best accuracy did not beat the baseline's at any multiple.")
    n_train = settings["n_train"] or "all"
    return f"""Setting: {ctx.dataset}, {n_train} training images, a fully connected network of three hidden layers of
100 ReLU units (He initialization, the same draw for every run), SGD with momentum 0.9 at a constant
learning rate, batches of 60, {settings['steps']} steps; validation accuracy ({settings['n_val']} held-out
training images) every {settings['every']} steps, averaged over the last {WINDOW} evaluations (one
evaluation's peak is noise). The baseline's learning rate is the one of
{', '.join(f'{g:g}' for g in settings['baseline_grid'])} with the best (averaged) validation accuracy; "best val
acc" below is always the averaged one.

{grid}
{table}
{verdict}
"""


def _plot(ctx: Context, results: dict) -> None:
    plt = pyplot()
    fig, (ax, ax_grid) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    chosen = next(r for r in results["baseline"] if r["lr"] == results["best_lr"])
    ax.plot(chosen["steps"], chosen["val_acc_smoothed"], color="black", label=f"baseline, lr {chosen['lr']:g}")
    colors = ("tab:blue", "tab:orange", "tab:red")
    for r, color in zip(results["batchnorm"], colors):
        ax.plot(r["steps"], r["val_acc_smoothed"], color=color,
                label=f"batch norm, lr {r['lr']:g} ({r['multiplier']}x)")
        if r["steps_to_target"]:
            ax.plot([r["steps_to_target"]], [results["target_acc"]], "o", color=color)
    ax.axhline(results["target_acc"], ls=":", color="gray", label=f"baseline's best {results['target_acc']:.4f}")
    finite = [a for r in [chosen, *results["batchnorm"]] for a in r["val_acc_smoothed"][len(r["steps"]) // 20:]]
    ax.set_ylim(max(0.0, min(finite) - 0.02), min(1.0, max(finite) + 0.02))
    ax.set(xlabel="training step", ylabel=f"validation accuracy (mean of {WINDOW} evaluations)",
           title="validation accuracy during training")
    ax.legend(loc="lower right", fontsize="small")
    lrs = [r["lr"] for r in results["baseline"]]
    ax_grid.plot(lrs, [r["best_val_acc"] for r in results["baseline"]], "o-", color="black", label="baseline")
    ax_grid.plot([r["lr"] for r in results["batchnorm"]], [r["best_val_acc"] for r in results["batchnorm"]], "s-",
                 color="tab:blue", label="batch norm")
    ax_grid.set_xscale("log")
    ax_grid.set(xlabel="learning rate", ylabel="best validation accuracy", title="best accuracy by learning rate")
    ax_grid.legend(loc="lower center", fontsize="small")
    fig.suptitle(f"Learning rate: SGD + momentum, 3 x 100 ReLU, batch 60 ({ctx.dataset})")
    ctx.save_figure(fig, "learning_rate.png")
