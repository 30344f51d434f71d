"""Higher learning rates, in the spirit of the batch norm paper's Figure 3 and Table 1 (Ioffe & Szegedy,
2015). Two parts:

1. Stability: each network (without and with batch norm) is trained at a grid of constant learning rates,
   extended by factors of sqrt(10) until every seed's run fails (diverges, collapses or does not learn).
   Per seed, a network's largest stable rate is the largest rate up to which every run of the grid
   completed; the claim is the ratio batch norm / baseline, judged on its logarithm.
2. The paper's own comparison: the baseline at its best stable rate with a decaying schedule, batch norm at
   the same rate and schedule (the paper's "BN-Baseline": 13.3M against 31.0M steps to Inception's
   accuracy, about 2.3x), and batch norm at 5x the rate with a 6x faster decay (the paper's "BN-x5", which
   also removed dropout and cut L2 5x; this network has neither: 2.1M steps, about 14x). Reported: steps
   to fixed validation accuracies, the area under the accuracy curve, the final accuracy.

Two tracks (`Track`): `learning-rate`, a 3 x 100 MLP at batch 60, and `learning-rate-cnn` (`normlab
experiment learning-rate --model bn-cnn`), the slimmed bn-cnn of `normlab.experiments.cnn` at batch 32 with
shorter runs (a NumPy CNN step costs about ten MLP steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from normlab.experiments import cnn
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
    error_bars,
    format_difference,
    format_interval,
    format_ratio,
    log_ratio,
    mean_interval,
    verdict,
)
from normlab.experiments.status import failed, failures
from normlab.experiments.sweep import RunSpec
from normlab.optim import SGD, Constant, StepDecay

HIDDEN = (100, 100, 100)
LABELS = {"none": "baseline", "batch": "batch norm"}
START_GRID = {"none": (0.01, 0.03, 0.1, 0.3, 1.0), "batch": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)}
GROWTH = math.sqrt(10)  # the grid's step, also when it is extended
MAX_RATE = 1e4  # the extension stops here whatever happens
THRESHOLDS = (0.80, 0.84, 0.86)
SMOOTH = 3  # evaluations averaged for "steps to": one evaluation's peak is noise
ARMS = {"baseline": ("none", 1, 1), "BN-Baseline": ("batch", 1, 1), "BN-x5": ("batch", 5, 6)}  # norm, lr x, decay x
PAPER = {"BN-Baseline": "13.3M vs 31.0M steps to 72.2 % (2.3x)", "BN-x5": "2.1M steps (14x), also without dropout, "
         "L2 cut 5x"}


@dataclass(frozen=True)
class Track:
    """What differs between the experiment's tracks: the network, its batch, the accuracy levels of "steps
    to" (below each network's ceiling) and the words and axes that describe it."""

    network: str  # in the setting's paragraph
    short: str  # in "what differs from the paper"
    title: str  # in the figure's title
    figure: str
    batch_size: int
    thresholds: tuple[float, ...]
    ylim: tuple[float, float]  # of the validation curves, in %
    evaluations: int  # of each run of part 2
    counts: dict[str, tuple]  # n_train, n_val, stability_steps, comparison_steps: ctx.count's (full, quick, minimum)
    model: str | None = None  # None: FullyConnectedNet(HIDDEN); cnn.MODEL: `cnn.build_cnn`


FC = Track("a fully connected network of three hidden layers of 100 ReLU units (He initialization)",
           "a 3 x 100 MLP", "3 x 100 ReLU, batch 60", "learning_rate.png", 60, THRESHOLDS, (60, 92), 40,
           {"n_train": (None, 10_000, 200), "n_val": (5000, 1000, 100), "stability_steps": (1000, 300, 20),
            "comparison_steps": (4000, 800, 20)})
CNN = Track("the slimmed bn-cnn of `normlab.experiments.cnn` (a 3x3 stem of 8 channels, residual blocks of 8 and 16 "
            "channels, global average pooling; He initialization)", "the slimmed bn-cnn",
            "slimmed bn-cnn, batch 32", "learning_rate_cnn.png", 32, (0.65, 0.70, 0.75), (40, 85), 20,
            {"n_train": (10_000, 500, 200), "n_val": (500, 200, 100), "stability_steps": (150, 20, 10),
             "comparison_steps": (500, 40, 20)}, cnn.MODEL)
TRACKS = {None: FC, cnn.MODEL: CNN}  # by the run configuration's "model"


def trailing_mean(values: list[float | None], window: int) -> list[float | None]:
    """The mean of each value and the window - 1 before it (fewer at the start); None where any is None."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i + 1 - window):i + 1]
        out.append(None if any(v is None for v in part) else float(np.mean(part)))
    return out


def smooth_trained(steps: list[int], values: list[float | None], window: int) -> list[float | None]:
    """`trailing_mean` of the evaluations after step 0, None at step 0: the probe of the untrained network
    (chance accuracy) is kept out of the window, or it would hold every smoothed value near the start down
    (with a window of 3, no level >= 0.70 could be reached before the third evaluation after step 0)."""
    trained = [i for i, step in enumerate(steps) if step > 0]
    out: list[float | None] = [None] * len(values)
    for i, mean in zip(trained, trailing_mean([values[i] for i in trained], window)):
        out[i] = mean
    return out


def steps_to_levels(steps: list[int], values: list[float | None],
                    thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, int | None]:
    """The first step whose smoothed validation accuracy reaches each threshold (None: never)."""
    smooth = smooth_trained(steps, values, SMOOTH)
    return {str(t): first_step_reaching(steps, smooth, t) for t in thresholds}


def train_one(spec: RunSpec) -> dict:
    """One network at one learning rate and schedule: its validation curve and status."""
    c = spec.config
    track = TRACKS[c.get("model")]
    data = spec.data(c["n_train"], c["n_val"])
    if track.model is None:
        model = mlp(spec, data, HIDDEN, normalization=c["normalization"])
    else:
        model = cnn.build_cnn(c["normalization"], data.input_shape, len(data.classes), spec.rng("init"))
    steps = c["steps"]
    schedule = (StepDecay(max(1, steps // (20 * c["decay_speed"])), 10 ** (-1 / 20)) if c["decay"] else Constant())
    r = train(model, SGD(model.parameters(), lr=c["lr"], momentum=0.9), data, batch_size=track.batch_size,
              rng=spec.rng("order"),
              steps=steps, every=c["every"], schedule=schedule,
              probe=lambda trainer: {"val_acc": trainer.accuracy(data.x_val, data.y_val)})
    s, acc = r.series("val_acc")
    smooth = smooth_trained(s, acc, SMOOTH)
    status = status_of(r, "val_acc", 1 / len(data.classes))
    ok = not status.startswith("diverged")
    return {"status": status, "steps": s, "val_acc": acc, "final_val_acc": smooth[-1] if ok else None,
            "mean_val_acc": float(np.mean(acc)) if ok else None,
            "steps_to": steps_to_levels(s, acc, track.thresholds), "seconds": r.seconds}


def largest_stable(rates: list[float], statuses: list[str]) -> float | None:
    """The largest rate up to which every run (rates ascending) completed; None if the first failed."""
    stable = None
    for rate, status in zip(rates, statuses):
        if failed(status):
            break
        stable = rate
    return stable


@register_experiment("learning-rate", claim="batch norm allows higher learning rates and needs fewer steps")
def run(ctx: Context) -> Report:
    return run_track(ctx, FC)


@register_experiment("learning-rate-cnn", claim="in a CNN too, batch norm allows higher learning rates and needs "
                     "fewer steps")
def run_cnn(ctx: Context) -> Report:
    return run_track(ctx, CNN)


def run_track(ctx: Context, track: Track) -> Report:
    """Both parts for one track."""
    network = {"hidden": HIDDEN} if track.model is None else {"model": cnn.MODEL, "widths": cnn.WIDTHS}
    settings = {**network, "activation": "relu", "weight_scale": "he", "batch_size": track.batch_size,
                "optimizer": "sgd", "momentum": 0.9, **{k: ctx.count(*v) for k, v in track.counts.items()},
                "start_grid": START_GRID, "growth": GROWTH, "thresholds": track.thresholds, "smooth": SMOOTH,
                "arms": {a: {"normalization": n, "lr_multiple": m, "decay_speed": d} for a, (n, m, d) in ARMS.items()},
                "decay": "lr x 10^(-1/20) every steps / (20 x decay speed) steps (10x over the run at speed 1)"}
    seeds = list(ctx.seeds)
    model = {} if track.model is None else {"model": track.model}  # the FC track's configs are as before
    sizes = {"n_train": settings["n_train"], "n_val": settings["n_val"]}
    stab = {**model, "steps": settings["stability_steps"], "every": max(1, settings["stability_steps"] // 10),
            **sizes, "decay": False, "decay_speed": 1}
    grids: dict[str, dict[float, list[dict]]] = {}
    for norm in ("none", "batch"):
        grid = {}
        pending = list(START_GRID[norm])
        while pending:
            results = ctx.runs(train_one, [{**stab, "normalization": norm, "lr": lr} for lr in pending])
            grid.update(zip(pending, results))
            top = max(grid)
            # Extend while some seed still trains at the largest rate tried.
            pending = ([float(f"{top * GROWTH:.3g}")] if any(not failed(r["status"]) for r in grid[top])
                       and top * GROWTH <= MAX_RATE else [])
        grids[norm] = dict(sorted(grid.items()))
        ctx.log(f"learning-rate: {LABELS[norm]}: rates {', '.join(f'{lr:g}' for lr in grids[norm])}")
    stable = {norm: [largest_stable(list(g), [g[lr][j]["status"] for lr in g]) for j in range(len(seeds))]
              for norm, g in grids.items()}
    log_ratios = [None if a is None or b is None else math.log10(a / b) for a, b in zip(stable["batch"], stable["none"])]
    ratio_iv = mean_interval(log_ratios)
    # The baseline's rate for part 2: the stable rate with the best mean final accuracy over the seeds.
    usable = [lr for lr, rs in grids["none"].items() if all(not failed(r["status"]) for r in rs)]
    best_lr = max(usable or list(grids["none"]), key=lambda lr: np.mean(
        [r["final_val_acc"] or 0.0 for r in grids["none"][lr]]))
    comp = {**model, "steps": settings["comparison_steps"],
            "every": max(1, settings["comparison_steps"] // track.evaluations), **sizes, "decay": True}
    configs = [{**comp, "normalization": n, "lr": best_lr * m, "decay_speed": d} for n, m, d in ARMS.values()]
    arms = dict(zip(ARMS, ctx.runs(train_one, configs)))
    # "Steps to" from each run's curve here, not as the run computed it: a cached run's figures then follow
    # the definition of this version (see `smooth_trained`).
    for rs in [*(rs for grid in grids.values() for rs in grid.values()), *arms.values()]:
        for r in rs:
            r["steps_to"] = steps_to_levels(r["steps"], r["val_acc"], track.thresholds)
    comparisons = {}
    for arm in ("BN-Baseline", "BN-x5"):
        entry = {}
        for key in ("mean_val_acc", "final_val_acc"):
            entry[key] = comparison([r[key] for r in arms[arm]], [r[key] for r in arms["baseline"]], scale=100,
                                    spec="+.1f").to_dict(predicted=False)
        for t in track.thresholds:
            speed = [None if a["steps_to"][str(t)] is None or b["steps_to"][str(t)] is None
                     else math.log10(b["steps_to"][str(t)] / a["steps_to"][str(t)])
                     for a, b in zip(arms[arm], arms["baseline"])]
            reached = [v for v in speed if v is not None]  # pairs where both reached the level
            iv = mean_interval(reached) if reached else Interval(math.nan, math.nan, math.nan, 0)
            entry[f"log10_speedup_{t}"] = {"per_seed": speed, "interval": iv.to_dict(),
                                           "verdict": verdict(iv, show=log_ratio)}
        comparisons[arm] = entry
    results = {"seeds": seeds, "grids": {norm: {f"{lr:g}": rs for lr, rs in g.items()} for norm, g in grids.items()},
               "largest_stable": stable, "log10_ratio": {"per_seed": log_ratios, "interval": ratio_iv.to_dict(),
                                                         "verdict": verdict(ratio_iv, show=log_ratio)},
               "best_baseline_lr": best_lr, "arms": arms, "comparisons": comparisons}
    _plot(ctx, track, settings, results)
    return Report(settings, results, _summary(ctx, track, settings, results))


def _failures(statuses: list[str]) -> str:
    """ "4 diverged (steps 8-14), 1 collapsed (step 1000)": failed runs grouped by kind."""
    kinds: dict[str, list[int]] = {}
    for status in statuses:
        kind, _, step = status.partition(" at step ")
        kinds.setdefault(kind, []).extend([int(step)] if step else [])
    parts = []
    for kind, steps in kinds.items():
        count = sum(s.partition(" at step ")[0] == kind for s in statuses)
        where = "" if not steps else (f" (step {steps[0]})" if len(set(steps)) == 1
                                      else f" (steps {min(steps)}-{max(steps)})")
        parts.append(f"{count} {kind}{where}")
    return ", ".join(parts) or "—"


def _summary(ctx: Context, track: Track, settings: dict, results: dict) -> str:
    n = len(ctx.seeds)
    rows = []
    for norm, grid in results["grids"].items():
        for lr, rs in grid.items():
            ok = [r["final_val_acc"] for r in rs if not failed(r["status"])]
            bad = [r["status"] for r in rs if failed(r["status"])]
            rows.append([LABELS[norm], lr, format_interval(mean_interval(ok), scale=100, unit=" %") if ok else "—",
                         f"{n - len(bad)}/{n}", _failures(bad)])
    grid_table = markdown_table(["network", "lr (constant)", "final val acc of the completed runs", "completed",
                                 "failures"], rows)
    stable = results["largest_stable"]

    def rates(values):
        return ", ".join("none" if v is None else f"{v:g}" for v in values)

    ratio = results["log10_ratio"]
    ratio_iv = Interval(**ratio["interval"])
    arm_rows = []
    for arm, rs in results["arms"].items():
        cells = [arm, f"{results['best_baseline_lr'] * ARMS[arm][1]:g}",
                 format_interval(mean_interval([r["mean_val_acc"] for r in rs]), scale=100, unit=" %", n=False),
                 format_interval(mean_interval([r["final_val_acc"] for r in rs]), scale=100, unit=" %", n=False)]
        arm_rows.append([*cells, *[steps_to_cell(rs, t) for t in track.thresholds], failures(rs)])
    arm_table = markdown_table(["network", "lr", "mean val acc (AUC)", "final val acc",
                                *[f"steps to {t:.2f}" for t in track.thresholds], "runs"], arm_rows)
    comp_rows = []
    for arm, entry in results["comparisons"].items():
        for key, label in (("mean_val_acc", "mean val acc over the run (AUC)"), ("final_val_acc", "final val acc")):
            iv = Interval(**entry[key]["difference"])
            comp_rows.append([arm, label, format_difference(iv, scale=100, unit=" points"), PAPER[arm],
                              entry[key]["verdict"]])
        for t in track.thresholds:
            e = entry[f"log10_speedup_{t}"]
            iv = Interval(**e["interval"])
            reached = sum(v is not None for v in e["per_seed"])
            comp_rows.append([arm, f"fewer steps to {t:.2f} ({reached}/{n} seed pairs reached it)", format_ratio(iv),
                              PAPER[arm], e["verdict"]])
    comp_table = markdown_table(["arm vs baseline", "measure", "ours: mean [95% CI]", "paper (Inception, ImageNet)",
                                 "verdict"], comp_rows)
    n_train = settings["n_train"] or "all"
    comp_every = max(1, settings["comparison_steps"] // track.evaluations)
    return f"""Setting: {ctx.dataset}, {n_train} training and {settings['n_val']} validation images (the split drawn by
the seed), {track.network}, SGD with
momentum 0.9, batches of {track.batch_size}; seeds {', '.join(map(str, ctx.seeds))} (n = {n}), each drawing the initial weights
(shared by every arm), the batch order and the split.

**1. Largest stable learning rate.** Each network at constant rates for {settings['stability_steps']} steps,
the grid ({', '.join(f'{lr:g}' for lr in START_GRID['none'])} for the baseline, {', '.join(f'{lr:g}' for lr in
START_GRID['batch'])} for batch norm) extended by sqrt(10) while any seed still trains at the largest rate. A
run fails when it diverges (NaN/Inf), does not learn (never above twice chance) or collapses (ends below twice
chance or half its best). Per seed, the largest stable rate is the largest rate up to which every run
completed.

{grid_table}
Largest stable rate per seed: baseline {rates(stable['none'])}; batch norm {rates(stable['batch'])}.
Batch norm / baseline (geometric mean over seeds, 95% CI of the mean log ratio): **{format_ratio(ratio_iv)}**,
{ratio['verdict']} (batch norm tolerates higher rates). Anchor: the paper trains BN-Inception at 5x and 30x
Inception's rate (it does not report where either breaks).

**2. The paper's comparison.** {settings['comparison_steps']} steps; the baseline at its best stable rate
({results['best_baseline_lr']:g}, the best mean final accuracy in part 1), BN-Baseline at the same rate, BN-x5 at 5x
with the decay 6x faster; the rate is multiplied by 10^(-1/20) every {settings['comparison_steps']} / (20 x decay
speed) steps. Validation accuracy every {comp_every} steps; "steps to" uses the mean of
the last {SMOOTH} evaluations and averages the seeds that reached the level (k/n).

{arm_table}
{comp_table}
The speed-ups are per seed pair (baseline steps / arm steps), shown as geometric means; a pair where either
never reached the level is left out of that row (its k/n says how many remain). What differs from the paper:
{track.short} on {ctx.dataset} for {settings['comparison_steps']} steps instead of Inception on ImageNet for
millions, no dropout or L2 to remove, and thresholds below this network's ceiling instead of Inception's 72.2 %.
"""


def _plot(ctx: Context, track: Track, settings: dict, results: dict) -> None:
    plt = pyplot()
    fig, (ax_grid, ax) = plt.subplots(1, 2, figsize=(13, 4.4))
    for norm, marker, color, height in (("none", "o", "black", 3), ("batch", "s", "tab:blue", 22)):
        grid = results["grids"][norm]
        lrs = [float(lr) for lr in grid]
        ivs = [mean_interval([r["final_val_acc"] for r in rs]) for rs in grid.values()]
        error_bars(ax_grid, lrs, ivs, scale=100, fmt=f"{marker}-", color=color, capsize=3,
                   label=f"{LABELS[norm]} (mean ± 95% CI of all seeds; missing: a run diverged)")
        for lr, rs in zip(lrs, grid.values()):
            bad = sum(failed(r["status"]) for r in rs)
            if bad:
                ax_grid.annotate(f"{bad}/{len(rs)} failed", (lr, height), color=color, fontsize="x-small",
                                 rotation=90, ha="center", va="bottom")
    ax_grid.set_xscale("log")
    ax_grid.set_ylim(0, 100)
    ax_grid.set(xlabel="learning rate (constant)", ylabel="final validation accuracy (%)",
                title=f"1. stability: {settings['stability_steps']} steps per rate")
    ax_grid.legend(loc="center left", fontsize="x-small")
    colors = {"baseline": "black", "BN-Baseline": "tab:blue", "BN-x5": "tab:red"}
    for arm, rs in results["arms"].items():
        curves_band(ax, rs[0]["steps"], [r["val_acc"] for r in rs], scale=100, color=colors[arm],
                    label=f"{arm}, lr {results['best_baseline_lr'] * ARMS[arm][1]:g}")
    for t in track.thresholds:
        ax.axhline(100 * t, ls=":", color="gray", lw=0.8)
    ax.set_ylim(*track.ylim)
    ax.set(xlabel="training step", ylabel="validation accuracy (%)",
           title=f"2. the paper's comparison (mean, 95% CI band, n = {len(ctx.seeds)})")
    ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(f"Learning rate: SGD + momentum, {track.title} ({ctx.dataset})")
    ctx.save_figure(fig, track.figure)
