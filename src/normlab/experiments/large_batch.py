"""Large batches and ghost batch norm, after Hoffer, Hubara & Soudry (2017), "Train longer, generalize better:
closing the generalization gap in large batch training of neural networks", Sec. 4 and Table 1.

Trained for the same number of epochs, a network with large batches makes far fewer updates and generalizes
worse than one with small batches (the "generalization gap"). Hoffer et al. scale the learning rate with the
square root of the batch size ("+LR") and propose ghost batch norm ("+GBN"): batch norm's statistics taken
over small virtual batches (they use 128) inside the large batch, which restores some of the noise of small
batch statistics and reduces the gap without more updates; only training longer ("regime adaptation")
closes it.

Arms, all from the same initial weights at a given seed and for the same number of epochs:
- small batches (the reference) with batch norm;
- a large batch (2048) with batch norm, learning rate scaled by sqrt(batch ratio) (Hoffer's +LR);
- the same large batch with ghost batch norm over virtual batches of 32 and of 128 (+LR +GBN).
"""

from __future__ import annotations

import math

import numpy as np

from normlab.experiments.base import (
    Context,
    Report,
    comparison_table,
    markdown_table,
    mlp,
    pyplot,
    register_experiment,
    status_of,
    train,
)
from normlab.experiments.stats import Interval, comparison, curves_band, format_interval, mean_interval, paired_values
from normlab.experiments.status import failed
from normlab.experiments.sweep import RunSpec
from normlab.optim import SGD, Cosine

HIDDEN = (256, 256)
SMALL, LARGE = 64, 2048
VIRTUAL = (32, 128)
BASE_LR, BASE_BATCH = 0.05, 32  # lr = BASE_LR * sqrt(batch / BASE_BATCH), the project's rule (and Hoffer's +LR)
HOFFER = ("Hoffer et al. 2017, Table 1 (MNIST F1: 5 fully connected layers of 512 with batch norm, batch 4096 vs "
          "128, ghost batches of 128; CIFAR-10/100, ImageNet CNNs): +GBN significantly reduces the generalization "
          "gap of +LR large-batch training; only regime adaptation (training longer) closes it")


def arms(small: int, large: int, virtual: tuple[int, ...]) -> dict[str, dict]:
    """name -> {batch_size, normalization, virtual_batch_size} of every arm."""
    table = {"small": {"batch_size": small, "normalization": "batch", "virtual_batch_size": None},
             "large": {"batch_size": large, "normalization": "batch", "virtual_batch_size": None}}
    for v in virtual:
        table[f"ghost-{v}"] = {"batch_size": large, "normalization": "ghost", "virtual_batch_size": v}
    return table


def label(name: str, arm: dict) -> str:
    if arm["normalization"] == "ghost":
        return f"batch {arm['batch_size']}, ghost batch norm (virtual {arm['virtual_batch_size']})"
    return f"batch {arm['batch_size']}, batch norm" + (" (small-batch reference)" if name == "small" else "")


def train_one(spec: RunSpec) -> dict:
    """One arm: the validation and training error after each epoch (evaluation mode, running statistics)."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    options = {"virtual_batch_size": c["virtual_batch_size"]} if c["virtual_batch_size"] else {}
    model = mlp(spec, data, HIDDEN, normalization=c["normalization"], **options)
    b = c["batch_size"]
    steps = c["epochs"] * math.ceil(len(data.x_train) / b)
    r = train(model, SGD(model.parameters(), lr=c["lr"], momentum=0.9), data, batch_size=b, rng=spec.rng("order"),
              epochs=c["epochs"], schedule=Cosine(steps), train_eval_size=c["train_eval_size"])
    status = status_of(r, None, 1 / len(data.classes))
    epochs = r.history.epochs
    result = {"status": status, "steps": r.steps, "seconds": r.seconds,
              "val_error": [None if e.val_acc is None else 1 - e.val_acc for e in epochs],
              "train_error": [1 - e.train_acc for e in epochs]}
    if failed(status):
        result["final_val_error"] = result["final_train_error"] = None
    else:
        result["final_val_error"], result["final_train_error"] = result["val_error"][-1], result["train_error"][-1]
    return result


@register_experiment("large-batch", claim="ghost batch norm reduces the generalization gap of large-batch training")
def run(ctx: Context) -> Report:
    small, large = ctx.pick(SMALL, 32), ctx.pick(LARGE, 512)
    table_of_arms = arms(small, large, VIRTUAL)
    settings = {"hidden": HIDDEN, "activation": "relu", "arms": table_of_arms, "optimizer": "sgd", "momentum": 0.9,
                "lr_rule": f"{BASE_LR} * sqrt(batch / {BASE_BATCH})", "schedule": "cosine",
                "epochs": ctx.count(10, 3, minimum=1), "n_train": ctx.count(20_000, 4000, minimum=large + 2),
                "n_val": ctx.count(5000, 1000, minimum=200), "train_eval_size": ctx.count(5000, 1000, minimum=200)}
    common = {k: settings[k] for k in ("epochs", "n_train", "n_val", "train_eval_size")}
    configs = [{"arm": name, **arm, "lr": BASE_LR * math.sqrt(arm["batch_size"] / BASE_BATCH), **common}
               for name, arm in table_of_arms.items()]
    settings["lr"] = {c["arm"]: c["lr"] for c in configs}
    runs = dict(zip(table_of_arms, ctx.runs(train_one, configs)))

    def values(arm, key="final_val_error"):
        return [r[key] for r in runs[arm]]

    table = {arm: {"val_error": mean_interval(values(arm)).to_dict(),
                   "train_error": mean_interval(values(arm, "final_train_error")).to_dict(),
                   "gap": mean_interval(paired_values(values(arm), values(arm, "final_train_error"))).to_dict(),
                   "steps": runs[arm][0]["steps"]} for arm in table_of_arms}
    comparisons = {}

    def compare(name, a, b, anchor):  # a, b: arms
        comparisons[name] = {**comparison(values(a), values(b), spec="+.2f", scale=100).to_dict(), "anchor": anchor}

    compare(f"batch {large} - batch {small} (batch norm): the generalization gap", "large", "small",
            "a gap exists at the same number of epochs (LB < SB in every row of Table 1)")
    for v in VIRTUAL:
        compare(f"batch {large}: batch norm - ghost batch norm (virtual {v})", "large", f"ghost-{v}",
                "+GBN improves on +LR (Table 1)")
    for v in VIRTUAL:
        compare(f"ghost batch norm (virtual {v}, batch {large}) - batch {small}: the gap left", f"ghost-{v}", "small",
                "a gap remains without regime adaptation (Table 1)")
    for arm in table_of_arms:
        ctx.log(f"large-batch: {label(arm, table_of_arms[arm])}: validation error "
                f"{format_interval(Interval(**table[arm]['val_error']), '.2f', scale=100, unit=' %')}")
    results = {"seeds": list(ctx.seeds), "runs": runs, "table": table, "comparisons": comparisons,
               "closed_fraction": {f"ghost-{v}": _closed_fraction(table, f"ghost-{v}") for v in VIRTUAL}}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _closed_fraction(table: dict, arm: str) -> float | None:
    """(large - ghost) / (large - small) of the mean validation errors: the share of the gap ghost batch norm
    closes (None when there is no gap to close)."""
    large, small, ghost = (table[a]["val_error"]["mean"] for a in ("large", "small", arm))
    if not all(isinstance(v, float) and math.isfinite(v) for v in (large, small, ghost)) or large <= small:
        return None
    return (large - ghost) / (large - small)


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    table, n, arms_ = results["table"], len(ctx.seeds), settings["arms"]

    def cell(iv):
        return format_interval(Interval(**iv), ".2f", scale=100, n=False)

    rows = []
    for arm, spec in arms_.items():
        bad = [r["status"] for r in results["runs"][arm] if failed(r["status"])]
        rows.append([label(arm, spec), f"{settings['lr'][arm]:.3g}", str(table[arm]["steps"]),
                     cell(table[arm]["val_error"]) + (f" ({len(bad)} failed)" if bad else ""),
                     cell(table[arm]["train_error"]), cell(table[arm]["gap"])])
    error_table = markdown_table(["arm", "learning rate", "steps", f"validation error (%), n = {n}",
                                  "training error (%)", "validation - training (points)"], rows)
    comp_table = comparison_table(results["comparisons"], "paired difference of validation error",
                                  lambda name, c: c["anchor"], "+.2f", "anchor's finding")
    closed = ", ".join(f"virtual {arm.split('-')[1]}: {'—' if f is None else f'{100 * f:.0f} %'}"
                       for arm, f in results["closed_fraction"].items())
    return f"""Setting: {ctx.dataset}, {settings['n_train']} training and {settings['n_val']} validation images
(the split drawn by the seed), a fully connected network of two hidden layers of 256 ReLU units with batch norm
(or ghost batch norm) after each, SGD with momentum 0.9, learning rate {settings['lr_rule']} (Hoffer's +LR: the
square-root rule) with cosine decay, **{settings['epochs']} epochs in every arm** (so the large batch makes
{table['large']['steps']} updates where the small one makes {table['small']['steps']}); seeds
{', '.join(map(str, ctx.seeds))} (n = {n}), each drawing the initial weights (shared by every arm), the batch order and
the split. Errors after the last epoch, in evaluation mode (running statistics; training error on
{settings['train_eval_size']} training images). Cells: mean ± 95% CI half-width.

Anchor: {HOFFER}. What differs: an MLP of two hidden layers on {ctx.dataset}, batch
{settings['arms']['large']['batch_size']} against {settings['arms']['small']['batch_size']}, {settings['epochs']} epochs
with a cosine schedule instead of their step regime. Their Table 1 is quoted qualitatively: we did not
transcribe its numbers.

{error_table}
{comp_table}
Share of the generalization gap (mean validation error, large minus small batch) that ghost batch norm closes:
{closed}.
"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plt = pyplot()
    arms_, n = settings["arms"], len(ctx.seeds)
    colors = {"small": "tab:green", "large": "tab:blue", "ghost-32": "tab:red", "ghost-128": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for arm, spec in arms_.items():
        done = [r for r in results["runs"][arm] if not failed(r["status"])]
        if not done:
            continue
        curves_band(axes[0], range(1, len(done[0]["val_error"]) + 1), [r["val_error"] for r in done], scale=100,
                    fmt="o-", alpha=0.15, color=colors[arm], label=label(arm, spec), ms=3)
    axes[0].set(xlabel="epoch", ylabel="validation error (%)",
                title=f"(a) validation error per epoch (mean ± 95% CI, n = {n})")
    axes[0].legend(fontsize="x-small")
    axes[0].grid(alpha=0.3, which="both")
    ax = axes[1]
    names = list(results["comparisons"])
    ivs = [Interval(**results["comparisons"][name]["difference"]) for name in names]
    ys = np.arange(len(names))[::-1]
    ax.errorbar([100 * iv.mean for iv in ivs], ys, capsize=3, fmt="o", color="tab:blue",
                xerr=np.array([[0, 0] if not iv.defined else [100 * (iv.mean - iv.low), 100 * (iv.high - iv.mean)]
                               for iv in ivs]).T)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(ys, [name.replace(": ", ":\n") for name in names], fontsize="x-small")
    ax.set(xlabel="paired difference of final validation error (points)",
           title=f"(b) paired differences, mean and 95% CI (n = {n})")
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"Large batches ({settings['arms']['large']['batch_size']}) with batch norm and ghost batch norm "
                 f"against small batches ({settings['arms']['small']['batch_size']}), {settings['epochs']} epochs each",
                 fontsize="medium")
    fig.tight_layout()
    ctx.save_figure(fig, "large_batch.png")
