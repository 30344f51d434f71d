"""What batch norm's running statistics get wrong, after Wu & Johnson (2021), "Rethinking 'Batch' in
BatchNorm", Sec. 3 (population statistics: EMA versus PreciseBN).

In evaluation a batch norm layer normalizes with population statistics that training estimated on the side,
by default an exponential moving average (EMA) of the batch statistics with momentum 0.1. The estimate can
be wrong two ways: a small momentum averages batches seen by weights that have since moved (it lags); a
large one keeps only the last few batches (it is noisy). Recomputing the statistics exactly after training
from K training batches (`normlab.nn.recompute_batchnorm_statistics`, PreciseBN) avoids both. Measured on
one training run per seed, with batches of 16 (small batches make the effect visible):

- validation accuracy over training in training mode (every batch of 16 normalized with its own statistics,
  as in training), in evaluation mode with the EMA at several momenta, and with precise statistics;
- the final validation error against the momentum (0.01 to 0.5, and the cumulative average of
  momentum=None, which weighs every batch since the start equally);
- the final validation error with precise statistics from K training batches, against K.

Every EMA is computed alongside the same run: a batch norm's training-mode output does not depend on its
running statistics, so the momentum cannot change the training itself. The model's layers keep momentum 1
(their running statistics are the last batch's mean and unbiased variance), and after every step each EMA is
moved towards them by the library's own rule (`functional.batchnorm.update_running_stats`), in the
buffers' float32, exactly as a layer with that momentum would have.
"""

from __future__ import annotations

import copy
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
from normlab.experiments.stats import (
    Interval,
    comparison,
    error_bars,
    format_interval,
    mean_band,
    mean_interval,
    paired_difference,
)
from normlab.experiments.status import failed
from normlab.experiments.sweep import RunSpec
from normlab.functional.batchnorm import update_running_stats
from normlab.nn import recompute_batchnorm_statistics
from normlab.nn.precise_bn import running_statistics_layers
from normlab.optim import SGD, Cosine

HIDDEN = (256, 256)
BATCH = 16
LR = 0.035  # batch-size's rule at 16: 0.05 * sqrt(16 / 32)
MOMENTA = (0.01, 0.03, 0.1, 0.3, 0.5, None)
DEFAULT_MOMENTUM = 0.1
PRECISE_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROBE_K = 64  # batches of 16: 1024 examples, within Wu & Johnson's 10^3 - 10^4
FEW_DOZEN = 32
WU_JOHNSON = ("Wu & Johnson 2021, Sec. 3.1 (ResNet-50, ImageNet): PreciseBN needs only 10^3-10^4 samples "
              "(a few dozen batches) for near-optimal accuracy and is more stable than EMA, which lags or is noisy")


def momentum_label(momentum: float | None) -> str:
    return "cumulative (None)" if momentum is None else f"{momentum:g}"


def momentum_key(momentum: float | None) -> str:
    return "None" if momentum is None else f"{momentum:g}"


class MovingAverages:
    """One EMA of every batch norm layer's statistics per momentum, fed the last batch's statistics after
    each step (the layers run with momentum 1)."""

    def __init__(self, layers, momenta):
        self.layers, self.momenta, self.batches = layers, momenta, 0
        self.stats = {momentum_key(m): [(np.zeros_like(bn.running_mean), np.ones_like(bn.running_var))
                                        for bn in layers] for m in momenta}

    def update(self) -> None:
        self.batches += 1
        for m in self.momenta:
            weight = 1.0 / self.batches if m is None else m  # the cumulative average's weight, as _BatchNorm's
            for (mean, var), bn in zip(self.stats[momentum_key(m)], self.layers):
                # The layer's running_var holds the batch's unbiased variance already: the "keras" convention
                # stores the variance it is given (the count, 2 here, only matters for "pytorch").
                update_running_stats(mean, var, bn.running_mean, bn.running_var, 2, weight, "keras")

    def accuracy(self, trainer, key: str, x: np.ndarray, y: np.ndarray) -> float:
        """Evaluation-mode accuracy with the EMA of momentum `key` in the layers (their own put back)."""
        saved = [(bn.running_mean.copy(), bn.running_var.copy()) for bn in self.layers]
        try:
            for (mean, var), bn in zip(self.stats[key], self.layers):
                bn.running_mean[...], bn.running_var[...] = mean, var
            return trainer.accuracy(x, y)
        finally:
            for (mean, var), bn in zip(saved, self.layers):
                bn.running_mean[...], bn.running_var[...] = mean, var


def training_mode_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    """Accuracy of a copy of the model in training mode, each batch of `batch_size` normalized with its own
    statistics (a last batch of one example, which batch norm cannot normalize, is left out)."""
    model = copy.deepcopy(model).train()
    n = len(x) - (len(x) % batch_size == 1)
    correct = sum(int((model.forward(x[i:i + batch_size]).argmax(axis=1) == y[i:i + batch_size]).sum())
                  for i in range(0, n, batch_size))
    return correct / n


def precise_accuracy(trainer, x_train, order, k: int, batch_size: int, x, y) -> float:
    """Evaluation-mode accuracy after recomputing the statistics from the first k batches of `order`."""
    model = trainer.model
    recompute_batchnorm_statistics(model, (x_train[order[i * batch_size:(i + 1) * batch_size]] for i in range(k)))
    return trainer.accuracy(x, y)


def train_one(spec: RunSpec) -> dict:
    """One run at batch 16: accuracies over training (training mode, each EMA, precise), and at the end."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    model = mlp(spec, data, HIDDEN, normalization="batch")
    layers = [bn for _, bn in running_statistics_layers(model)]
    for bn in layers:
        bn.momentum = 1.0  # running statistics = the last batch's; the EMAs are kept in MovingAverages
    averages = MovingAverages(layers, [None if m == "None" else float(m) for m in c["momenta"]])
    order = spec.rng("precise").permutation(len(data.x_train))  # the precise batches: prefixes of one order
    x_val, y_val, b = data.x_val, data.y_val, c["batch_size"]

    def probe(trainer):
        if trainer.iteration > 0:
            averages.update()
        if trainer.iteration % c["every"] and trainer.iteration != c["steps"]:
            return {}
        return {"train_mode": training_mode_accuracy(trainer.model, x_val, y_val, b),
                **{f"ema {k}": averages.accuracy(trainer, k, x_val, y_val) for k in averages.stats},
                "precise": precise_accuracy(trainer, data.x_train, order, c["probe_k"], b, x_val, y_val)}

    r = train(model, SGD(model.parameters(), lr=c["lr"], momentum=0.9), data, batch_size=b, rng=spec.rng("order"),
              steps=c["steps"], schedule=Cosine(c["steps"]), probe=probe, every=1, train_eval_size=500)
    r.probes[:] = [p for p in r.probes if len(p) > 1]  # the steps that only fed the EMAs
    status = status_of(r, "train_mode", 1 / len(data.classes))
    result = {"status": status, "seconds": r.seconds, "steps": [p["step"] for p in r.probes],
              "curves": {key: [p[key] for p in r.probes] for key in r.probes[-1] if key != "step"}}
    if failed(status):
        return result
    final = r.probes[-1]
    result["final_error"] = {
        "train_mode": 1 - final["train_mode"],
        "ema": {k: 1 - final[f"ema {k}"] for k in averages.stats},
        "precise": {str(k): 1 - precise_accuracy(r.trainer, data.x_train, order, k, b, x_val, y_val)
                    for k in c["precise_ks"]},
    }
    return result


@register_experiment("population-statistics",
                     claim="batch norm's running averages misestimate the population statistics; exact ones "
                           "recomputed from a few dozen batches do better")
def run(ctx: Context) -> Report:
    steps = ctx.count(5000, 600, minimum=40)
    ks = ctx.pick(PRECISE_KS, (1, 4, 16, 64))
    settings = {"hidden": HIDDEN, "normalization": "batch", "activation": "relu", "batch_size": BATCH, "lr": LR,
                "optimizer": "sgd", "momentum": 0.9, "schedule": "cosine", "steps": steps,
                "n_train": ctx.count(None, 10_000, minimum=1000), "n_val": ctx.count(5000, 1000, minimum=200),
                "evaluations": ctx.count(10, 6, minimum=3), "momenta": [momentum_key(m) for m in MOMENTA],
                "precise_ks": list(ks), "probe_k": min(PROBE_K, max(ks)),
                "few_dozen": max(k for k in ks if k <= FEW_DOZEN)}
    config = {"batch_size": BATCH, "lr": LR, "steps": steps, "n_train": settings["n_train"],
              "n_val": settings["n_val"], "every": max(1, steps // settings["evaluations"]),
              "momenta": settings["momenta"], "precise_ks": list(ks), "probe_k": settings["probe_k"]}
    runs = ctx.runs(train_one, [config])[0]
    ok = all(not failed(r["status"]) for r in runs)

    def final(path):
        return [final_error(r, path) for r in runs]

    default, best_k, few = momentum_key(DEFAULT_MOMENTUM), str(max(ks)), str(settings["few_dozen"])
    table = {"train_mode": mean_interval(final(["train_mode"])).to_dict(),
             "ema": {k: mean_interval(final(["ema", k])).to_dict() for k in settings["momenta"]},
             "precise": {str(k): mean_interval(final(["precise", str(k)])).to_dict() for k in ks}}
    comparisons = {}

    def compare(name, a, b, anchor):
        comparisons[name] = {**comparison(a, b, spec="+.2f", scale=100).to_dict(), "anchor": anchor}

    precise = ["precise", best_k]
    claims = [(["ema", default], precise, "PreciseBN more accurate than EMA"),
              (["ema", default], ["precise", few], "a few dozen batches suffice (10^3-10^4 samples)"),
              (["precise", "1"], precise, "too few samples: worse"),
              *[(["ema", k], precise, anchor) for k, anchor in (("0.01", "small momentum lags"),
                                                                 ("0.5", "large momentum is noisy"),
                                                                 ("None", "the cumulative average lags most"))
                if k in settings["momenta"]],
              (["train_mode"], precise, "batch statistics of a small batch are noisy at inference")]
    for a, b, anchor in claims:
        compare(f"{_statistics(a)} - {_statistics(b)}, final", final(a), final(b), anchor)
    # Mid-training, where the weights still move: the EMA's lag shows there (Wu & Johnson's Fig. 2)
    mid = _middle_probe(runs)
    if mid is not None:
        def at_mid(key):
            return [None if failed(r["status"]) else 1 - r["curves"][key][mid] for r in runs]

        step = runs[0]["steps"][mid]
        for k in ("0.01", default):
            compare(f"EMA (momentum {k}) - precise ({settings['probe_k']} batches), step {step}",
                    at_mid(f"ema {k}"), at_mid("precise"), "EMA lags while the weights move")
    curves = _curve_table(runs)
    results = {"seeds": list(ctx.seeds), "runs": runs, "table": table, "comparisons": comparisons,
               "curves": curves, "all_completed": ok}
    for key, iv in (("training mode", table["train_mode"]), (f"EMA {default}", table["ema"][default]),
                    (f"precise {best_k}", table["precise"][best_k])):
        ctx.log(f"population-statistics: {key}: {format_interval(Interval(**iv), '.2f', scale=100, unit=' %')}")
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _statistics(path: list[str]) -> str:
    """The statistics of a path into a run's "final_error", in a comparison's name: "EMA (momentum 0.1)"."""
    if path[0] == "ema":
        return f"EMA (momentum {momentum_label(None if path[1] == 'None' else float(path[1]))})"
    if path[0] == "precise":
        return f"precise ({path[1]} batch{'es' if path[1] != '1' else ''})"
    return f"training mode (batches of {BATCH})"


def final_error(run: dict, path: list[str]) -> float | None:
    """run["final_error"][path[0]][path[1]]...; None for a failed run (which has none)."""
    value = run.get("final_error")
    for key in path:
        value = None if value is None else value[key]
    return value


def _middle_probe(runs) -> int | None:
    """The index of the probe nearest the middle of training, when every run has it."""
    if any(failed(r["status"]) for r in runs):
        return None
    steps = runs[0]["steps"]
    if len(steps) < 3:
        return None
    return min(range(len(steps)), key=lambda i: abs(steps[i] - steps[-1] / 2))


def _curve_table(runs) -> dict:
    """Per curve, per probe: the mean accuracy and its interval over the seeds (completed runs only)."""
    done = [r for r in runs if not failed(r["status"])]
    if not done:
        return {}
    return {"steps": done[0]["steps"],
            **{key: [mean_interval([r["curves"][key][i] for r in done]).to_dict() for i in range(len(done[0]["steps"]))]
               for key in done[0]["curves"]}}


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    table, n = results["table"], len(ctx.seeds)

    def cell(iv):
        return format_interval(Interval(**iv), ".2f", scale=100, n=False)

    rows = [[f"training mode (each batch of {BATCH} normalized with its own statistics)", cell(table["train_mode"])]]
    rows += [[f"EMA, momentum {momentum_label(None if k == 'None' else float(k))}"
              + (" (the default)" if k == momentum_key(DEFAULT_MOMENTUM) else ""), cell(iv)]
             for k, iv in table["ema"].items()]
    rows += [[f"precise, {k} batch{'es' if k != '1' else ''} ({int(k) * BATCH} examples)", cell(iv)]
             for k, iv in table["precise"].items()]
    error_table = markdown_table(["statistics used in evaluation", f"final validation error (%), n = {n}"], rows)
    comp_table = comparison_table(results["comparisons"], "paired difference of validation error",
                                  lambda name, c: c["anchor"], "+.2f", "anchor's finding")
    bad = [r["status"] for r in results["runs"] if failed(r["status"])]
    failures = f"\n{len(bad)} run(s) failed: {', '.join(bad)}.\n" if bad else ""
    n_train = settings["n_train"] or "all (55000)"
    return f"""Setting: {ctx.dataset}, {n_train} training and {settings['n_val']} validation images (the split drawn by
the seed), a fully connected network of two hidden layers of 256 ReLU units with batch norm after each,
**batches of {BATCH}**, SGD with momentum 0.9 at learning rate {LR} with cosine decay over {settings['steps']} steps;
seeds {', '.join(map(str, ctx.seeds))} (n = {n}), each drawing the initial weights, the batch order and the split.
One training run per seed: the EMAs at every momentum are kept alongside it (the momentum cannot change the
training, see the module docstring), so every row of a seed is the same network evaluated with other
statistics. Precise statistics: `normlab.nn.recompute_batchnorm_statistics` on the first K batches of {BATCH}
of one random order of the training images (training-mode forwards; the mean and unbiased variance of every
layer's input over all K x {BATCH} examples). Over training they are recomputed from {settings['probe_k']}
batches at each evaluation. Cells: mean ± 95% CI half-width.

Anchor: {WU_JOHNSON}. Their EMA/PreciseBN comparison is a plot (Fig. 2, 3); what differs here: an MLP on
{ctx.dataset}, batches of {BATCH} instead of 256-1024 images, {settings['steps']} steps.
{failures}
{error_table}
{comp_table}
The first figure shows the validation error over training and its paired difference to precise statistics;
the second the final error's paired difference to precise statistics from the most batches, against the
momentum (a) and against the number of examples the precise statistics were computed from (b).
"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    runs = [r for r in results["runs"] if not failed(r["status"])]
    if not runs:
        return
    plt = pyplot()
    n, steps = len(runs), runs[0]["steps"]
    best = str(max(settings["precise_ks"]))
    shown = [("train_mode", f"training mode (batch statistics of {BATCH})", "tab:gray", "--"),
             ("ema 0.01", "EMA, momentum 0.01", "tab:purple", "-"),
             ("ema 0.1", "EMA, momentum 0.1 (default)", "tab:blue", "-"),
             ("ema 0.5", "EMA, momentum 0.5", "tab:cyan", "-"),
             ("ema None", "EMA, cumulative average (momentum=None)", "tab:brown", ":"),
             ("precise", f"precise, {settings['probe_k']} batches", "tab:red", "-")]
    shown = [s for s in shown if s[0] in runs[0]["curves"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for key, label, color, style in shown:
        errors = [[100 * (1 - a) for a in r["curves"][key]] for r in runs]  # (seeds, probes)
        axes[0].plot(steps, np.mean(errors, axis=0), style, color=color, label=label,
                     lw=2 if key == "precise" else 1.3)
        if key == "precise":
            continue
        precise = [[100 * (1 - a) for a in r["curves"]["precise"]] for r in runs]
        ivs = [paired_difference([e[i] for e in errors], [p[i] for p in precise]) for i in range(len(steps))]
        mean_band(axes[1], steps, ivs, fmt=style, alpha=0.15, color=color, label=label)
    axes[0].set_yscale("log")
    _plain_log_ticks(axes[0].yaxis)
    axes[0].set(xlabel="training step", ylabel="validation error (%, log scale)",
                title=f"(a) validation error, mean over n = {n} seeds")
    axes[1].axhline(0, color="tab:red", lw=1)
    axes[1].set(xlabel="training step", ylabel="minus precise statistics' error (points)",
                title=f"(b) paired difference to precise ({settings['probe_k']} batches), mean ± 95% CI")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="x-small")
    fig.suptitle(f"Validation error over training with batches of {BATCH}, by the statistics used in evaluation",
                 fontsize="medium")
    ctx.save_figure(fig, "population_statistics_training.png")

    def minus_best(path):
        return paired_difference([100 * final_error(r, path) for r in runs],
                                 [100 * final_error(r, ["precise", best]) for r in runs])

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    ax = axes[0]
    numeric = [k for k in settings["momenta"] if k != "None"]
    error_bars(ax, [float(k) for k in numeric], [minus_best(["ema", k]) for k in numeric], fmt="o-",
               color="tab:blue", capsize=3, label="EMA with this momentum")
    _band(ax, minus_best(["train_mode"]), "tab:gray", f"training mode (batches of {BATCH})")
    if "None" in settings["momenta"]:
        _band(ax, minus_best(["ema", "None"]), "tab:brown", "cumulative average (momentum=None)")
    ax.set_xscale("log")
    ax.set(xlabel="running-statistics momentum (log scale)", ylabel=f"error minus precise ({best} batches) (points)",
           title="(a) the EMA's momentum")
    ax = axes[1]
    ks = settings["precise_ks"]
    error_bars(ax, [k * BATCH for k in ks], [minus_best(["precise", str(k)]) for k in ks], fmt="s-",
               color="tab:red", capsize=3, label=f"precise, K batches of {BATCH}")
    _band(ax, minus_best(["ema", momentum_key(DEFAULT_MOMENTUM)]), "tab:blue", "EMA, momentum 0.1 (default)")
    ax.axvspan(1e3, 1e4, color="tab:green", alpha=0.08, label="Wu & Johnson: 10^3-10^4 samples suffice")
    ax.set_xscale("log")
    ax.set(xlabel=f"examples the statistics are computed from (K x {BATCH}, log scale)",
           ylabel=f"error minus precise ({best} batches) (points)", title="(b) precise statistics from K batches")
    for ax in axes:
        ax.axhline(0, color="tab:red", lw=1)
        ax.legend(fontsize="x-small")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Final validation error, paired difference to precise statistics from {best} batches "
                 f"(mean ± 95% CI, n = {n})", fontsize="medium")
    ctx.save_figure(fig, "population_statistics_final.png")


def _band(ax, iv: Interval, color: str, label: str) -> None:
    """A horizontal reference: the mean as a line, its interval as a band."""
    if not math.isfinite(iv.mean):
        return
    ax.axhline(iv.mean, color=color, ls="--", lw=1, label=label)
    if iv.defined:
        ax.axhspan(iv.low, iv.high, color=color, alpha=0.1)


def _plain_log_ticks(axis) -> None:
    """Numbers (20, 30, 50) instead of powers of ten on a log axis that spans less than a decade or two."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())
