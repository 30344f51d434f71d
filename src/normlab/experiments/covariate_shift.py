"""Internal covariate shift, in the setting of the batch norm paper's Figure 1 (Ioffe & Szegedy, 2015):
three fully connected hidden layers of 100 sigmoid units, batches of 60, the same initial weights with
and without batch norm. It records test accuracy against steps (Fig. 1a) and the 15th, 50th and 85th
percentiles of the input of last-hidden-layer sigmoids over training (Fig. 1b, c).

Three arms per seed: the paper's small initialization N(0, 0.1^2) without and with batch norm, and a
Glorot-initialized network without batch norm, so that "batch norm trains faster" can be told apart from
"the small-init baseline started badly" (it sits at chance for its first ~100 steps).

The percentiles are measured on a fixed batch of test images passed through the network as training
computes it (batch norm with the statistics of that batch; its running statistics are left unchanged),
so every point describes the same examples through the network as it is at that step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from normlab.experiments.base import (
    Context,
    Report,
    first_step_reaching,
    markdown_table,
    mlp,
    pyplot,
    register_experiment,
    status_of,
    steps_to_cell,
    train,
)
from normlab.experiments.stats import (
    Interval,
    comparison,
    curves_band,
    format_difference,
    format_interval,
    mean_interval,
    verdict,
)
from normlab.experiments.status import failures
from normlab.experiments.sweep import RunSpec
from normlab.models import FullyConnectedNet
from normlab.nn import Linear, Sigmoid
from normlab.optim import SGD

PERCENTILES = (15, 50, 85)
HIDDEN = (100, 100, 100)
ARMS = {"small": ("none", "small"), "batch": ("batch", "small"), "glorot": ("none", "glorot")}
LABELS = {"small": "without batch norm, N(0, 0.1^2) init", "batch": "with batch norm, N(0, 0.1^2) init",
          "glorot": "without batch norm, Glorot init"}
THRESHOLDS = (0.75, 0.80, 0.85)
TRACKED_UNITS = 10  # the percentile curves of units 0..9 are kept (for the plot, first seed); statistics use all 100


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


def glorot_(model: FullyConnectedNet, rng: np.random.Generator) -> None:
    """Redraw every Linear weight from Glorot's normal N(0, 2 / (fan_in + fan_out))."""
    for layer in model:
        if isinstance(layer, Linear):
            fan_out, fan_in = layer.weight.data.shape
            layer.weight.data[...] = rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / (fan_in + fan_out))


def train_one(spec: RunSpec) -> dict:
    """One arm at one seed: the test-accuracy curve and the percentiles of the last sigmoid inputs."""
    norm, init = ARMS[spec.config["arm"]]
    return train_and_track(spec, norm, init == "glorot")


def train_and_track(spec: RunSpec, normalization: str, glorot: bool, wrap: Callable | None = None) -> dict:
    """Build the 3 x 100 sigmoid network (weights from N(0, weight_scale^2), or Glorot's normal; then
    wrap(model) if given) and train it as Figure 1 does (SGD, batches of 60, spec.config's lr and steps),
    recording the test accuracy and the 15th/50th/85th percentiles of the last sigmoid's inputs on the first
    n_probe test images (as training computes them) at every probe. Returns a run's result: the accuracy
    curve, its summaries and the shift."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"], c["n_test"])
    probe_x = data.x_test[:c["n_probe"]]
    model = mlp(spec, data, HIDDEN, normalization=normalization, activation="sigmoid", weight_scale=c["weight_scale"])
    if glorot:
        glorot_(model, spec.rng("glorot"))
    if wrap is not None:
        model = wrap(model)
    recorded = []

    def probe(trainer):  # a noise layer (noisy-batchnorm) is on: a fresh draw, as at a training step
        recorded.append(np.percentile(last_sigmoid_inputs(model, probe_x), PERCENTILES, axis=0))  # (3, U)
        return {"test_acc": trainer.accuracy(data.x_test, data.y_test)}

    r = train(model, SGD(model.parameters(), lr=c["lr"]), data, batch_size=60, rng=spec.rng("order"),
              steps=c["steps"], probe=probe, every=c["every"], at=c["early_records"])
    quantiles = np.stack(recorded)  # (T, 3, U)
    shift = shift_statistics(quantiles)
    steps, acc = r.series("test_acc")
    return {"status": status_of(r, "test_acc", 1 / len(data.classes)), "steps": steps, "test_acc": acc,
            "final_test_acc": acc[-1], "best_test_acc": max(acc), "mean_test_acc": float(np.mean(acc)),
            "steps_to": {str(t): first_step_reaching(steps, acc, t) for t in THRESHOLDS},
            "median_travel": float(np.median(shift["median_travel"])),
            "width_ratio": float(np.median(shift["width_ratio"])),
            "unit_travel": shift["median_travel"][:TRACKED_UNITS],
            "unit_percentiles": quantiles[:, :, :TRACKED_UNITS], "seconds": r.seconds}


@register_experiment("covariate-shift", claim="batch norm reduces internal covariate shift and trains faster")
def run(ctx: Context) -> Report:
    settings = shift_settings(ctx, ctx.count(4_000, 1_500, minimum=20), 100, 6,
                              arms={a: {"normalization": n, "init": i} for a, (n, i) in ARMS.items()})
    runs = run_arms(ctx, train_one, ARMS, settings, LABELS)
    comparisons = {}
    for other in ("small", "glorot"):
        for key, predicted in (("mean_test_acc", "positive"), ("final_test_acc", "positive"),
                               ("median_travel", "negative")):
            comparisons[f"{key} batch - {other}"] = comparison(completed(runs["batch"], key),
                                                               completed(runs[other], key), predicted).to_dict()
    summary = arm_summary(runs, ("mean_test_acc", "final_test_acc", "best_test_acc", "median_travel", "width_ratio"))
    results = {"seeds": list(ctx.seeds), "runs": runs, "summary": summary, "comparisons": comparisons}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def shift_settings(ctx: Context, steps: int, records: int, early: int, **extra) -> dict:
    """The settings of Figure 1's setting trained for `steps` steps (`extra` added): records every
    steps // records steps, and up to `early` extra ones spaced evenly on a log scale before the first of
    them (the plots' step axis is logarithmic, and the networks differ most in those first steps)."""
    every = max(1, steps // records)
    early_records = sorted({int(s) for s in np.geomspace(5, every, early).round() if s < every}) if every > 5 else []
    return {"hidden": HIDDEN, "activation": "sigmoid", "batch_size": 60, "steps": steps, "every": every,
            "early_records": early_records, **extra, "optimizer": "sgd", "lr": 0.1, "momentum": 0.0,
            "weight_scale": 0.1, "thresholds": THRESHOLDS, "n_train": ctx.count(None, 10_000, minimum=200),
            "n_val": ctx.count(5000, 1000, minimum=100), "n_test": ctx.count(2000, 1000, minimum=200),
            "n_probe": ctx.count(500, 300, minimum=100), "percentiles": PERCENTILES}


def run_arms(ctx: Context, function, arms, settings: dict, labels: dict[str, str]) -> dict[str, list[dict]]:
    """function's runs of every arm (configuration: the arm and what a run reads of `settings`):
    runs[arm][seed]. The percentile curves are plotted for the first seed only, so the other seeds' are
    dropped (results.json stays small)."""
    keys = ("steps", "every", "early_records", "lr", "weight_scale", "noise", "n_train", "n_val", "n_test", "n_probe")
    base = {k: settings[k] for k in keys if k in settings}
    runs = dict(zip(arms, ctx.runs(function, [{"arm": arm, **base} for arm in arms])))
    for arm, rs in runs.items():
        for r in rs[1:]:
            r["unit_percentiles"] = None
        ctx.log(f"{ctx.name}: {labels[arm]}: final test accuracy "
                f"{format_interval(mean_interval([r['final_test_acc'] for r in rs]), scale=100, unit=' %')}")
    return runs


def completed(rs: list[dict], key: str) -> list:
    """The seeds' values of `key`, None for a run that diverged."""
    return [r[key] if not r["status"].startswith("diverged") else None for r in rs]


def arm_summary(runs: dict[str, list[dict]], keys) -> dict:
    """summary[arm][key]: the mean and 95% interval over the seeds (a diverged run: missing)."""
    return {arm: {key: mean_interval(completed(rs, key)).to_dict() for key in keys} for arm, rs in runs.items()}


def arm_table(runs: dict[str, list[dict]], summary: dict, labels: dict[str, str], align: str | None = None) -> str:
    """Per arm: the accuracy over the run and at its end, the steps to each threshold, the shift, the runs."""
    n = len(next(iter(runs.values())))

    def cell(arm, key, scale=100, unit=" %", spec=".1f"):
        return format_interval(Interval(**summary[arm][key]), spec=spec, scale=scale, unit=unit, n=False)

    rows = [[labels[arm], cell(arm, "mean_test_acc"), cell(arm, "final_test_acc"),
             *[steps_to_cell(runs[arm], t) for t in THRESHOLDS], cell(arm, "median_travel", 1, "", ".2f"),
             cell(arm, "width_ratio", 1, "", ".1f"), failures(runs[arm])] for arm in runs]
    return markdown_table([f"network (n = {n} seeds)", "mean test acc over the run", "final test acc",
                           *[f"steps to {t:.2f} (mean of seeds reaching it)" for t in THRESHOLDS],
                           "median travel (widths)", "width max/min", "runs"], rows, align)


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    comps, n = results["comparisons"], len(ctx.seeds)
    table = arm_table(results["runs"], results["summary"], LABELS)
    rows = []
    names = {"mean_test_acc": ("mean test accuracy over the run (area under the curve / steps)", 100, " points"),
             "final_test_acc": ("final test accuracy", 100, " points"),
             "median_travel": ("median travel of a last-layer sigmoid input", 1, " widths")}
    for name, c in comps.items():
        key, other = name.split(" batch - ")
        label, scale, unit = names[key]
        iv = Interval(**c["difference"])
        spec = "+.1f" if scale == 100 else "+.3f"
        rows.append([label, f"batch norm - {LABELS[other]}", format_difference(iv, spec, scale, unit),
                     "higher" if c["predicted"] == "positive" else "lower", verdict(iv, c["predicted"], spec, scale)])
    verdicts = markdown_table(["measure", "comparison", "mean [95% CI]", "claim predicts", "verdict"], rows, "llrll")
    n_train = settings["n_train"] or "all"
    return f"""Setting: {ctx.dataset}, {n_train} training images, a fully connected network of three hidden layers of
100 sigmoid units, plain SGD at learning rate {settings['lr']}, batches of 60, {settings['steps']} steps (the paper: 50000
on MNIST; cut to fit the suite's budget). Three arms: weights from N(0, {settings['weight_scale']}^2) (the paper's
MNIST setting) without and with batch norm, the same draw for both, and a Glorot-initialized network without
batch norm. Seeds {', '.join(map(str, ctx.seeds))} (n = {n}): each draws the initial weights, the batch order and
the train/validation split. Test accuracy on {settings['n_test']} test images and the percentiles of every
last-layer sigmoid input on {settings['n_probe']} fixed test images (normalized with their own statistics, as in
training) every {settings['every']} steps, and at steps {', '.join(map(str, settings['early_records'])) or 'none'} before that.
"Median travel": the range of a unit's median over training divided by its mean 15th-85th width; "width
max/min": its widest over its narrowest 15th-85th spread; both medians over the 100 units, then means over
the seeds. Cells: mean ± 95% CI half-width over the seeds.

Anchor: Ioffe & Szegedy (2015), Figure 1: on MNIST (3 x 100 sigmoid, 50000 steps, batch 60) the network with
batch norm reaches higher test accuracy faster, and its sigmoid inputs' percentiles stay stable while the
baseline's drift. No numbers are given beyond the plot.

{table}
{verdicts}"""


def plot_percentiles(ax, steps: list[int], quantiles: np.ndarray, color: str, ylabel: str, title: str,
                     ylim: tuple[float, float]) -> None:
    """One unit's 15th-85th percentile band and median over training (Fig. 1b, c). quantiles: (T, 3)."""
    ax.fill_between(steps, quantiles[:, 0], quantiles[:, 2], color=color, alpha=0.2, label="15th-85th percentile")
    ax.plot(steps, quantiles[:, 1], "-", color=color, label="median")
    ax.set(xlabel="training step (log scale)", ylabel=ylabel, title=title, ylim=ylim)
    ax.title.set_fontsize("small")
    ax.legend(loc="upper left", fontsize="x-small")


def log_step_axes(axes, first: int, total: int) -> None:
    """Logarithmic from the first recorded step on: the early steps, where the networks differ most, and
    the long end both show; step 0 sits on a short linear stretch before it."""
    plt = pyplot()
    ticks = [0, *[10**k for k in range(1, 7) if first <= 10**k <= total]]
    for ax in axes:
        ax.set_xscale("symlog", linthresh=first, linscale=0.2)
        ax.set_xlim(0, total)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(plt.NullLocator())


def plot_shift(ctx: Context, steps: int, runs: dict[str, list[dict]], reference: str, shown: tuple[str, ...],
               colors: dict[str, str], labels: dict[str, str], title: str, filename: str) -> None:
    """(a) every arm's test accuracy (mean and 95% CI band over the seeds); then, for each arm in `shown`, the
    percentiles over training (first seed) of the tracked unit whose median travels the median distance in
    the arm `reference`, on a shared y range."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(4.5 * (len(shown) + 1), 4))
    for arm, rs in runs.items():
        curves_band(axes[0], rs[0]["steps"], [r["test_acc"] for r in rs], color=colors[arm], label=labels[arm])
    axes[0].set(xlabel="training step (log scale)", ylabel="test accuracy",
                title=f"(a) test accuracy, mean and 95% CI (n = {len(ctx.seeds)})", ylim=(0, 1))
    axes[0].legend(loc="lower right", fontsize="x-small")
    travel = np.array(runs[reference][0]["unit_travel"])
    unit = int(np.argsort(travel)[len(travel) // 2])
    quantiles = {arm: np.array(runs[arm][0]["unit_percentiles"])[:, :, unit] for arm in shown}  # (T, 3)
    low, high = min(q[:, 0].min() for q in quantiles.values()), max(q[:, 2].max() for q in quantiles.values())
    ylim = (low - 0.05 * (high - low), high + 0.05 * (high - low))
    for ax, arm, letter in zip(axes[1:], shown, "bcd"):
        plot_percentiles(ax, runs[arm][0]["steps"], quantiles[arm], colors[arm], f"input of sigmoid unit {unit}",
                         f"({letter}) {labels[arm]} (seed {ctx.seeds[0]})", ylim)
    recorded = runs[reference][0]["steps"]
    log_step_axes(axes, recorded[1] if len(recorded) > 1 else 1, steps)
    fig.suptitle(f"{title}: 3 x 100 sigmoid units, batch 60, {steps} steps ({ctx.dataset})")
    ctx.save_figure(fig, filename)


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    colors = {"small": "tab:gray", "batch": "tab:blue", "glorot": "tab:green"}
    plot_shift(ctx, settings["steps"], results["runs"], "small", ("small", "batch"), colors, LABELS,
               "Internal covariate shift", "covariate_shift.png")
