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

import numpy as np

from normlab.experiments.base import (
    Context,
    Report,
    first_step_reaching,
    markdown_table,
    pyplot,
    register_experiment,
    status_of,
    train,
)
from normlab.experiments.stats import (
    Interval,
    comparison,
    format_difference,
    format_interval,
    mean_band,
    mean_interval,
    verdict,
)
from normlab.experiments.status import failed
from normlab.experiments.sweep import RunSpec
from normlab.models import FullyConnectedNet
from normlab.nn import Sigmoid
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
    from normlab.nn import Linear

    for layer in model:
        if isinstance(layer, Linear):
            fan_out, fan_in = layer.weight.data.shape
            layer.weight.data[...] = rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / (fan_in + fan_out))


def train_one(spec: RunSpec) -> dict:
    """One arm at one seed: the test-accuracy curve and the percentiles of the last sigmoid inputs."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"], c["n_test"])
    probe_x = data.x_test[:c["n_probe"]]
    norm, init = ARMS[c["arm"]]
    model = FullyConnectedNet(int(np.prod(data.input_shape)), HIDDEN, len(data.classes), normalization=norm,
                              activation="sigmoid", weight_scale=c["weight_scale"], rng=spec.rng("init"))
    if init == "glorot":
        glorot_(model, spec.rng("glorot"))
    return train_and_track(model, data, spec, probe_x)


def train_and_track(model, data, spec: RunSpec, probe_x: np.ndarray) -> dict:
    """Train `model` as Figure 1 does (SGD, batches of 60, spec.config's lr and steps), recording the test
    accuracy and the 15th/50th/85th percentiles of the last sigmoid's inputs on probe_x (as training
    computes them) at every probe. Returns a run's result: the accuracy curve, its summaries and the shift."""
    c = spec.config
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
    steps = ctx.count(4_000, 1_500, minimum=20)
    every = max(1, steps // 100)
    # Extra records at steps spaced evenly on a log scale before the first regular one: the plots' step axis
    # is logarithmic, and the networks differ most in those first steps.
    early = sorted({int(s) for s in np.geomspace(5, every, 6).round() if s < every}) if every > 5 else []
    settings = {"hidden": HIDDEN, "activation": "sigmoid", "batch_size": 60, "steps": steps, "every": every,
                "early_records": early, "arms": {a: {"normalization": n, "init": i} for a, (n, i) in ARMS.items()},
                "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_scale": 0.1, "thresholds": THRESHOLDS,
                "n_train": ctx.count(None, 10_000, minimum=200), "n_val": ctx.count(5000, 1000, minimum=100),
                "n_test": ctx.count(2000, 1000, minimum=200), "n_probe": ctx.count(500, 300, minimum=100),
                "percentiles": PERCENTILES}
    base = {k: settings[k] for k in ("steps", "every", "early_records", "lr", "weight_scale", "n_train", "n_val",
                                      "n_test", "n_probe")}
    per_arm = ctx.runs(train_one, [{**base, "arm": arm} for arm in ARMS])
    runs = dict(zip(ARMS, per_arm))
    for rs in runs.values():  # the percentile curves are plotted for the first seed only: keep results.json small
        for r in rs[1:]:
            r["unit_percentiles"] = None
    for arm, rs in runs.items():
        ctx.log(f"covariate-shift: {LABELS[arm]}: final test accuracy "
                f"{format_interval(mean_interval([r['final_test_acc'] for r in rs]), scale=100, unit=' %')}")

    def values(arm, key):
        return [r[key] if not r["status"].startswith("diverged") else None for r in runs[arm]]

    comparisons = {}
    for other in ("small", "glorot"):
        for key, predicted in (("mean_test_acc", "positive"), ("final_test_acc", "positive"),
                               ("median_travel", "negative")):
            comparisons[f"{key} batch - {other}"] = comparison(values("batch", key), values(other, key), predicted,
                                                               spec="+.3f").to_dict()
    summary = {arm: {key: mean_interval(values(arm, key)).to_dict()
                     for key in ("mean_test_acc", "final_test_acc", "best_test_acc", "median_travel", "width_ratio")}
               for arm in ARMS}
    results = {"seeds": list(ctx.seeds), "runs": runs, "summary": summary, "comparisons": comparisons}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    runs, summary, comps = results["runs"], results["summary"], results["comparisons"]
    n = len(ctx.seeds)

    def cell(arm, key, scale=100, unit=" %", spec=".1f"):
        return format_interval(Interval(**summary[arm][key]), spec=spec, scale=scale, unit=unit, n=False)

    def reach(arm, t):
        got = [r["steps_to"][str(t)] for r in runs[arm] if r["steps_to"][str(t)] is not None]
        if not got:
            return f"never (0/{n})"
        return f"{np.mean(got):.0f} ({len(got)}/{n})"

    rows = []
    for arm in ARMS:
        statuses = sorted({r["status"] for r in runs[arm] if failed(r["status"])})
        rows.append([LABELS[arm], cell(arm, "mean_test_acc"), cell(arm, "final_test_acc"),
                     *[reach(arm, t) for t in THRESHOLDS],
                     cell(arm, "median_travel", 1, "", ".2f"), cell(arm, "width_ratio", 1, "", ".1f"),
                     ", ".join(statuses) or "all completed"])
    table = markdown_table([f"network (n = {n} seeds)", "mean test acc over the run", "final test acc",
                            *[f"steps to {t:.2f} (mean of seeds reaching it)" for t in THRESHOLDS],
                            "median travel (widths)", "width max/min", "runs"], rows)
    lines = []
    names = {"mean_test_acc": ("mean test accuracy over the run (area under the curve / steps)", 100, " points"),
             "final_test_acc": ("final test accuracy", 100, " points"),
             "median_travel": ("median travel of a last-layer sigmoid input", 1, " widths")}
    for name, c in comps.items():
        key, other = name.split(" batch - ")
        label, scale, unit = names[key]
        iv = Interval(**c["difference"])
        spec = "+.1f" if scale == 100 else "+.3f"
        lines.append(f"| {label} | batch norm - {LABELS[other]} | {format_difference(iv, spec, scale, unit)} | "
                     f"{'higher' if c['predicted'] == 'positive' else 'lower'} | "
                     f"{verdict(iv, c['predicted'], spec=spec, scale=scale)} |")
    verdicts = ("| measure | paired difference | 95% CI | claim predicts | verdict |\n"
                "| :--- | :--- | ---: | :--- | :--- |\n").replace(" 95% CI |", " mean [95% CI] |")
    verdicts = verdicts.replace("| measure | paired difference | mean [95% CI] |", "| measure | comparison | mean [95% CI] |")
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
{verdicts}{chr(10).join(lines)}
"""


def plot_accuracy_bands(ax, runs: dict[str, list[dict]], colors: dict[str, str], labels: dict[str, str],
                        key: str = "test_acc") -> None:
    """Per arm, the mean over the seeds of the accuracy curve `key` and its 95% CI as a band (runs[arm]:
    the seeds' results, each with "steps" and `key`; a diverged run is shorter and left out)."""
    for arm, rs in runs.items():
        steps = rs[0]["steps"]
        curves = np.array([[np.nan if a is None else a for a in r[key]] for r in rs
                           if len(r[key]) == len(steps)])  # (n, T)
        ivs = [mean_interval(list(col)) for col in curves.T]
        mean_band(ax, steps, ivs, color=colors[arm], label=labels[arm])


def plot_percentiles(ax, steps: list[int], quantiles: np.ndarray, color: str, ylabel: str, title: str,
                     ylim: tuple[float, float]) -> None:
    """One unit's 15th-85th percentile band and median over training (Fig. 1b, c). quantiles: (T, 3)."""
    ax.fill_between(steps, quantiles[:, 0], quantiles[:, 2], color=color, alpha=0.2, label="15th-85th percentile")
    ax.plot(steps, quantiles[:, 1], "-", color=color, label="median")
    ax.set(xlabel="training step (log scale)", ylabel=ylabel, title=title, ylim=ylim)
    ax.title.set_fontsize("small")
    ax.legend(loc="upper left", fontsize="x-small")


def percentile_limits(quantiles: list[np.ndarray]) -> tuple[float, float]:
    """A shared y range for percentile panels (each (T, 3)), padded by 5 %."""
    lo = min(q[:, 0].min() for q in quantiles)
    hi = max(q[:, 2].max() for q in quantiles)
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


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


def median_unit(travel: list[float]) -> int:
    """The tracked unit whose median travels the median distance (the plotted one)."""
    return int(np.argsort(np.array(travel))[len(travel) // 2])


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colors = {"small": "tab:gray", "batch": "tab:blue", "glorot": "tab:green"}
    steps_total = settings["steps"]
    plot_accuracy_bands(axes[0], results["runs"], colors, LABELS)
    axes[0].set(xlabel="training step (log scale)", ylabel="test accuracy",
                title=f"(a) test accuracy, mean and 95% CI (n = {len(ctx.seeds)})")
    axes[0].legend(loc="lower right", fontsize="x-small")
    # (b), (c): seed 0, the tracked unit whose median travels the median distance without batch norm.
    small, batch = results["runs"]["small"][0], results["runs"]["batch"][0]
    unit = median_unit(small["unit_travel"])
    quantiles = {arm: np.array(r["unit_percentiles"])[:, :, unit] for arm, r in (("small", small), ("batch", batch))}
    ylim = percentile_limits(list(quantiles.values()))
    for ax, (arm, r), letter in zip(axes[1:], (("small", small), ("batch", batch)), "bc"):
        plot_percentiles(ax, r["steps"], quantiles[arm], colors[arm], f"input of sigmoid unit {unit}",
                         f"({letter}) {LABELS[arm]} (seed {ctx.seeds[0]})", ylim)
    log_step_axes(axes, small["steps"][1] if len(small["steps"]) > 1 else 1, steps_total)
    fig.suptitle(f"Internal covariate shift: 3 x 100 sigmoid units, batch 60, {steps_total} steps ({ctx.dataset})")
    ctx.save_figure(fig, "covariate_shift.png")
