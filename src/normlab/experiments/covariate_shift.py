"""Internal covariate shift, in the setting of the batch norm paper's Figure 1 (Ioffe & Szegedy, 2015):
three fully connected hidden layers of 100 sigmoid units, batches of 60, the same initial weights with
and without batch norm. It records test accuracy against steps (Fig. 1a) and the 15th, 50th and 85th
percentiles of the input of last-hidden-layer sigmoids over training (Fig. 1b, c).

The percentiles are measured on a fixed batch of test images passed through the network as training
computes it (batch norm with the statistics of that batch; its running statistics are left unchanged),
so every point describes the same examples through the network as it is at that step.
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
from normlab.nn import Sigmoid
from normlab.optim import SGD

PERCENTILES = (15, 50, 85)
HIDDEN = (100, 100, 100)
LABELS = {"none": "without batch norm", "batch": "with batch norm"}


def last_sigmoid_inputs(model: FullyConnectedNet, x: np.ndarray) -> np.ndarray:
    """The input of the last hidden layer's sigmoids (N, 100) for images x, as training computes it: batch
    norm normalizes with the statistics of x itself. The running statistics are restored afterwards, so
    measuring changes nothing."""
    last = max(i for i, layer in enumerate(model) if isinstance(layer, Sigmoid))
    saved = {name: np.array(b, copy=True) for name, b in model.named_buffers()}
    try:
        h = x
        for layer in list(model)[:last]:
            h = layer.forward(h)
    finally:
        model.load_state_dict(saved, strict=False)
    return h


def shift_statistics(quantiles: np.ndarray) -> dict[str, np.ndarray]:
    """How far each unit's input distribution moves over training.

    Inputs: quantiles (T, 3, U): the 15th/50th/85th percentiles of U units at T recorded steps.
    Returns per unit (U,): "median_travel", the range of the median over the steps divided by the mean
    15-85 width (how many widths the distribution's centre wanders), and "width_ratio", the largest
    15-85 width over the smallest (how much its spread changes).
    """
    median = quantiles[:, 1]  # (T, U)
    width = quantiles[:, 2] - quantiles[:, 0]  # (T, U)
    travel = (median.max(axis=0) - median.min(axis=0)) / width.mean(axis=0)
    return {"median_travel": travel, "width_ratio": width.max(axis=0) / np.maximum(width.min(axis=0), 1e-12)}


@register_experiment("covariate-shift", claim="batch norm reduces internal covariate shift and trains faster")
def run(ctx: Context) -> Report:
    steps = ctx.count(50_000, 3_000, minimum=20)
    every = max(1, steps // 100)
    # Extra records at steps spaced evenly on a log scale before the first regular one: the plots' step axis
    # is logarithmic, and the networks differ most in those first steps.
    early = sorted({int(s) for s in np.geomspace(10, every, 8).round() if s < every}) if every > 10 else []
    settings = {"hidden": HIDDEN, "activation": "sigmoid", "batch_size": 60, "steps": steps, "every": every,
                "early_records": early,
                "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_scale": 0.1,
                "n_train": ctx.count(None, 10_000, minimum=200), "n_val": ctx.count(5000, 1000, minimum=100),
                "n_test": ctx.count(10_000, 2000, minimum=200), "n_probe": ctx.count(1000, 500, minimum=100),
                "percentiles": PERCENTILES}
    data = ctx.data(settings["n_train"], settings["n_val"], settings["n_test"])
    probe_x = data.x_test[:settings["n_probe"]]
    runs, quantiles = {}, {}
    for norm in ("none", "batch"):
        model = FullyConnectedNet(int(np.prod(data.input_shape)), HIDDEN, len(data.classes), normalization=norm,
                                  activation="sigmoid", weight_scale=settings["weight_scale"], rng=ctx.rng("init"))
        recorded = []

        def probe(trainer, model=model, recorded=recorded):
            recorded.append(np.percentile(last_sigmoid_inputs(model, probe_x), PERCENTILES, axis=0))  # (3, U)
            return {"test_acc": trainer.accuracy(data.x_test, data.y_test)}

        runs[norm] = train(model, SGD(model.parameters(), lr=settings["lr"]), data, batch_size=60,
                           rng=ctx.rng("order"), steps=steps, probe=probe, every=every, at=early)
        quantiles[norm] = np.stack(recorded)  # (T, 3, U)
        ctx.log(f"covariate-shift: {LABELS[norm]}: test accuracy {runs[norm].probes[-1]['test_acc']:.4f} after "
                f"{runs[norm].steps} steps ({runs[norm].seconds:.0f} s)")

    shifts = {norm: shift_statistics(q) for norm, q in quantiles.items()}
    # The "typical" sigmoid: the unit whose median travels the median distance in the network without batch
    # norm; the same unit (same initial weights) is shown for the batch-normalized network.
    travel = shifts["none"]["median_travel"]
    unit = int(np.argsort(travel)[len(travel) // 2])
    results = {"unit": unit, "runs": {}}
    for norm, run_ in runs.items():
        steps_, acc = run_.series("test_acc")
        q = quantiles[norm][:, :, unit]  # (T, 3)
        results["runs"][norm] = {
            "status": run_.status, "steps": steps_, "test_acc": acc, "final_test_acc": acc[-1],
            "best_test_acc": max(acc), "seconds": run_.seconds,
            "unit_percentiles": {str(p): q[:, i] for i, p in enumerate(PERCENTILES)},
            "median_travel": {"unit": shifts[norm]["median_travel"][unit],
                              "median_over_units": float(np.median(shifts[norm]["median_travel"]))},
            "width_ratio": {"unit": shifts[norm]["width_ratio"][unit],
                            "median_over_units": float(np.median(shifts[norm]["width_ratio"]))},
        }
    _plot(ctx, results, steps)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    runs = results["runs"]
    bn, base = runs["batch"], runs["none"]
    final = base["final_test_acc"]
    # Accuracy levels on the way to the baseline's final one: early training, late training, the end.
    targets = (0.9 * final, 0.98 * final, final)
    reach = {norm: [first_step_reaching(r["steps"], r["test_acc"], t) for t in targets] for norm, r in runs.items()}
    rows = []
    for norm, r in runs.items():
        q = r["unit_percentiles"]
        rows.append([LABELS[norm], *[str(s) if s is not None else "never" for s in reach[norm]],
                     fmt(r["final_test_acc"]), fmt(r["best_test_acc"]),
                     f"{q['15'][-1]:.2f} / {q['50'][-1]:.2f} / {q['85'][-1]:.2f}",
                     fmt(r["median_travel"]["median_over_units"], ".2f"),
                     fmt(r["width_ratio"]["median_over_units"], ".2f")])
    headers = ["network", f"steps to {targets[0]:.3f}", f"steps to {targets[1]:.3f}", f"steps to {targets[2]:.3f}",
               "final test acc", "best test acc", f"unit {results['unit']}: final 15/50/85th",
               "median travel (widths)", "width max/min"]

    def sooner(i: int) -> bool:
        mine, theirs = reach["batch"][i], reach["none"][i]
        return mine is not None and (theirs is None or mine < theirs)

    early = "holds" if sooner(0) and sooner(1) else "holds in part" if sooner(0) or sooner(1) else "does not hold here"
    gap = bn["final_test_acc"] - final
    ending = "higher" if gap > 0.005 else "lower" if gap < -0.005 else "about the same"
    speed = (f"- Faster training {early}: batch norm reached {targets[0]:.3f} (90 % of the baseline's final accuracy) "
             f"after {reach['batch'][0]} steps against {reach['none'][0]}, and {targets[1]:.3f} (98 %) after "
             f"{reach['batch'][1]} against {reach['none'][1]}. Its final accuracy is {ending} "
             f"({fmt(bn['final_test_acc'])} against {fmt(final)}; best {fmt(bn['best_test_acc'])} against "
             f"{fmt(base['best_test_acc'])}).")
    less_shift = bn["median_travel"]["median_over_units"] < base["median_travel"]["median_over_units"]
    shift = (f"- Less shift of the sigmoid inputs {'holds' if less_shift else 'does not hold here'}: the median of "
             f"a last-layer sigmoid's input travels {fmt(bn['median_travel']['median_over_units'], '.2f')} widths "
             f"with batch norm and {fmt(base['median_travel']['median_over_units'], '.2f')} without, and its "
             f"15th-85th spread changes by a factor {fmt(bn['width_ratio']['median_over_units'], '.2f')} against "
             f"{fmt(base['width_ratio']['median_over_units'], '.2f')} (medians over the 100 units).")
    n_train = settings["n_train"] or "all"
    return f"""Setting: {ctx.dataset}, {n_train} training images, a fully connected network of three hidden layers of
100 sigmoid units (weights drawn from N(0, {settings['weight_scale']}^2), the same draw with and without batch
norm), plain SGD at learning rate {settings['lr']}, batches of 60, {settings['steps']} steps. Test accuracy on
{settings['n_test']} test images and the percentiles of each last-layer sigmoid input on {settings['n_probe']}
fixed test images (one batch, normalized with its own statistics as in training) are recorded every
{settings['every']} steps, and at steps {', '.join(map(str, settings['early_records'])) or 'none'} before that. The shown unit is the one
whose median moves the median distance in the network without batch norm.

"Median travel" is the range of a unit's median over training divided by its mean 15th-85th percentile
width; "width max/min" the ratio of its widest to its narrowest 15th-85th spread. Both are medians over the
100 last-layer units.

{markdown_table(headers, rows)}
{speed}
{shift}
"""


def _plot(ctx: Context, results: dict, steps: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colors = {"none": "tab:gray", "batch": "tab:blue"}
    for norm, r in results["runs"].items():
        axes[0].plot(r["steps"], r["test_acc"], color=colors[norm], label=LABELS[norm])
    axes[0].set(xlabel="training step (log scale)", ylabel="test accuracy", title="(a) test accuracy")
    lows = [min(r["test_acc"][1:] or r["test_acc"]) for r in results["runs"].values()]
    axes[0].set_ylim(max(0.0, min(lows) - 0.02), 1.0)
    axes[0].legend(loc="upper left")
    lo = min(min(r["unit_percentiles"]["15"]) for r in results["runs"].values())
    hi = max(max(r["unit_percentiles"]["85"]) for r in results["runs"].values())
    pad = 0.05 * (hi - lo)
    for ax, (norm, r), letter in zip(axes[1:], results["runs"].items(), "bc"):
        q = r["unit_percentiles"]
        ax.fill_between(r["steps"], q["15"], q["85"], color=colors[norm], alpha=0.2)
        for p, style in zip(PERCENTILES, ("--", "-", "--")):
            ax.plot(r["steps"], q[str(p)], style, color=colors[norm])
        ax.set(xlabel="training step (log scale)", ylabel=f"input of sigmoid unit {results['unit']}",
               title=f"({letter}) {LABELS[norm]}: 15th, 50th, 85th percentiles", ylim=(lo - pad, hi + pad))
        ax.title.set_fontsize("medium")
    first = results["runs"]["none"]["steps"][1] if len(results["runs"]["none"]["steps"]) > 1 else 1
    ticks = [0, *[10**k for k in range(1, 7) if first <= 10**k <= steps]]
    for ax in axes:
        # Logarithmic from the first recorded step on: the early steps, where the networks differ most, and
        # the long end both show; step 0 sits on a short linear stretch before it.
        ax.set_xscale("symlog", linthresh=first, linscale=0.2)
        ax.set_xlim(0, steps)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    fig.suptitle(f"Internal covariate shift: 3 x 100 sigmoid units, batch 60, {steps} steps ({ctx.dataset})")
    ctx.save_figure(fig, "covariate_shift.png")
