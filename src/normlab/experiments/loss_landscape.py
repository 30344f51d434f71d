"""The loss landscape along the gradient with and without batch norm, after Santurkar et al. (2018), "How does
batch normalization help optimization?", Figure 4: at points of training, step along the gradient with step
sizes from 0.5 to 4 times the learning rate and measure the variation of the loss, the change of the gradient
("gradient predictiveness") and the effective beta-smoothness (`normlab.experiments.landscape`).

Two arms per seed, the same initial weights and the same batches: a fully connected ReLU network without and
with batch norm, plain SGD at one learning rate. The measures use a training batch drawn at each point (the
same for both arms), in training mode (batch norm with that batch's statistics: the landscape the optimizer
walks on); measuring changes neither the weights nor the running statistics.
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import Context, Report, markdown_table, mlp, pyplot, register_experiment, status_of, train
from normlab.experiments.landscape import direction_measures, model_objective
from normlab.experiments.stats import (
    Interval,
    format_interval,
    format_ratio,
    log_ratio,
    mean_interval,
    paired_difference,
    verdict,
)
from normlab.experiments.status import failures
from normlab.experiments.sweep import RunSpec
from normlab.optim import SGD

HIDDEN = (100, 100, 100, 100)
LR = 0.1
STEP_FACTORS = tuple(np.linspace(0.5, 4.0, 8).round(3))  # eta / lr: eta in [0.05, 0.4] at lr 0.1
ARMS = {"none": "without batch norm", "batch": "with batch norm"}
MEASURES = {"loss_range": ("loss variation (max - min over the step sizes)", "loss range"),
            "gradient_change_max": ("gradient predictiveness: largest ‖grad change‖ over the step sizes",
                                    "largest l2 gradient change"),
            "effective_beta": ("effective beta-smoothness: largest ‖grad change‖ / ‖step‖", "effective beta")}


def train_one(spec: RunSpec) -> dict:
    """One arm at one seed: training with the landscape measured every `every` steps."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    model = mlp(spec, data, HIDDEN, normalization=c["arm"])
    batches = spec.rng("measure batches")
    etas = [LR * f for f in STEP_FACTORS]

    def probe(trainer):
        idx = batches.choice(len(data.x_train), c["measure_batch"], replace=False)
        w, objective = model_objective(model, data.x_train[idx], data.y_train[idx])
        m = direction_measures(objective, w, etas)
        s = m.summary()
        return {**s, "loss_range": s["loss_max"] - s["loss_min"], "losses": m.losses,
                "gradient_changes": m.gradient_changes}

    r = train(model, SGD(model.parameters(), lr=LR), data, batch_size=c["batch_size"], rng=spec.rng("order"),
              steps=c["steps"], probe=probe, every=c["every"], train_eval_size=2000)
    status = status_of(r, None, 1 / len(data.classes))
    out = {"status": status, "steps": [p["step"] for p in r.probes], "seconds": r.seconds,
           "final_val_acc": None if status.startswith("diverged") else r.trainer.accuracy(data.x_val, data.y_val),
           "train_loss": [float(np.mean(r.history.loss[max(0, s - c["every"]):s])) if s else None
                          for s in (p["step"] for p in r.probes)]}
    for key in ("loss", "loss_min", "loss_max", "loss_range", "gradient_change_min", "gradient_change_max",
                "effective_beta", "gradient_norm"):
        out[key] = [p[key] for p in r.probes]
    # The mean over the points of training after the first (step 0 is the shared initialization's landscape
    # seen through each arm, not yet training), each seed's one number per measure for the verdicts.
    for key in MEASURES:
        values = out[key][1:] if len(out[key]) > 1 else out[key]
        out[f"mean_{key}"] = None if status.startswith("diverged") else float(np.mean(values))
    return out


@register_experiment("loss-landscape", claim="batch norm makes the loss landscape smoother "
                                             "(Santurkar et al. 2018, Fig. 4)")
def run(ctx: Context) -> Report:
    steps = ctx.count(2000, 600, minimum=20)
    every = max(1, steps // ctx.count(40, 15, minimum=3))
    settings = {"hidden": HIDDEN, "activation": "relu", "weight_scale": "he", "optimizer": "sgd", "lr": LR,
                "momentum": 0.0, "batch_size": 128, "steps": steps, "every": every,
                "step_sizes": [LR * f for f in STEP_FACTORS], "step_factors": STEP_FACTORS,
                "measure_batch": 256, "n_train": ctx.count(None, 10_000, minimum=512),
                "n_val": ctx.count(5000, 1000, minimum=100)}
    base = {k: settings[k] for k in ("steps", "every", "batch_size", "measure_batch", "n_train", "n_val")}
    runs = dict(zip(ARMS, ctx.runs(train_one, [{"arm": arm, **base} for arm in ARMS])))
    for arm, rs in runs.items():
        ctx.log(f"loss-landscape: {ARMS[arm]}: effective beta "
                f"{format_interval(mean_interval([r['mean_effective_beta'] for r in rs]), spec='.3g')}")

    def log_values(arm, key):
        return [None if r[f"mean_{key}"] is None or r[f"mean_{key}"] <= 0 else float(np.log10(r[f"mean_{key}"]))
                for r in runs[arm]]

    comparisons = {}
    for key in MEASURES:
        diff = paired_difference(log_values("batch", key), log_values("none", key))
        comparisons[key] = {"log10_ratio": diff.to_dict(), "predicted": "negative",
                            "verdict": verdict(diff, "negative", show=log_ratio)}
    summary = {arm: {key: mean_interval([r[f"mean_{key}"] for r in runs[arm]]).to_dict() for key in MEASURES}
               for arm in ARMS}
    for arm in ARMS:
        summary[arm]["final_val_acc"] = mean_interval([r["final_val_acc"] for r in runs[arm]]).to_dict()
    results = {"seeds": list(ctx.seeds), "runs": runs, "summary": summary, "comparisons": comparisons}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    runs, summary, comps = results["runs"], results["summary"], results["comparisons"]
    n = len(ctx.seeds)
    rows = []
    for arm, label in ARMS.items():
        rows.append([label, *[format_interval(Interval(**summary[arm][key]), spec=".3g", n=False)
                              for key in MEASURES],
                     format_interval(Interval(**summary[arm]["final_val_acc"]), scale=100, unit=" %", n=False),
                     failures(runs[arm])])
    table = markdown_table([f"network (n = {n} seeds)", *[MEASURES[k][1] + ", mean over training" for k in MEASURES],
                            "final val acc", "runs"], rows, align="lrrrrl")
    anchor = {"loss_range": "Fig. 4a: a much narrower band with BN (VGG, CIFAR-10)",
              "gradient_change_max": "Fig. 4b: much smaller gradient changes with BN",
              "effective_beta": "Fig. 4c: a smaller effective beta with BN"}
    comp_rows = [[MEASURES[key][0], format_ratio(Interval(**c["log10_ratio"])), anchor[key], "< 1x (smoother with BN)",
                  c["verdict"]] for key, c in comps.items()]
    comp_table = markdown_table(["measure (per seed: its mean over the points of training)",
                                 "with / without batch norm: geometric mean [95% CI]", "anchor", "claim predicts",
                                 "verdict"], comp_rows, align="lrlll")
    factors = ", ".join(f"{f:g}" for f in settings["step_factors"])
    n_train = settings["n_train"] or "all"
    return f"""Setting: {ctx.dataset}, {n_train} training images, a fully connected network of {len(HIDDEN)} hidden layers
of {HIDDEN[0]} ReLU units (He initialization, the same draw with and without batch norm), plain SGD at learning
rate {LR}, batches of {settings['batch_size']}, {settings['steps']} steps. Every {settings['every']} steps (and at step
0), on a training batch of {settings['measure_batch']} drawn for that point (the same for both networks), in
training mode: the gradient g, then L(w - eta g) and grad L(w - eta g) for eta = lr x ({factors}), i.e. eta from
{settings['step_sizes'][0]:g} to {settings['step_sizes'][-1]:g}. Seeds {', '.join(map(str, ctx.seeds))} (n = {n}),
each drawing the initial weights, the batch order, the measuring batches and the split.

Per seed each measure is averaged over the points of training after step 0; the verdicts compare those
per-seed means on a log scale (the paired difference of log10, shown as a ratio), with batch norm predicted
smaller. "Loss variation": max - min of L(w - eta g) over the etas; "gradient predictiveness": the largest
‖grad L(w - eta g) - grad L(w)‖; "effective beta": the largest ‖grad L(w - eta g) - grad L(w)‖ / ‖eta g‖.

Anchor: Santurkar et al. (2018), Figure 4 (VGG on CIFAR-10; the same measures along the gradient at a range
of step sizes): with batch norm the loss varies far less along the gradient, the gradient changes less, and the
effective beta is smaller. The paper gives plots, no numbers. What differs: an MLP on {ctx.dataset}; our
step-size range, 0.5-4 x the learning rate ([0.05, 0.4] at lr 0.1), is our choice (the paper's may differ). The
gradient norms themselves differ between the two parametrizations (batch norm's output does not change when a
layer's weights are scaled), so the absolute changes compare different scales; the ratio in (c) is per unit of
distance.

{table}
{comp_table}"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"none": "tab:gray", "batch": "tab:blue"}
    panels = (("loss_min", "loss_max", "loss along the gradient, L(w - eta g)", "(a) loss landscape"),
              ("gradient_change_min", "gradient_change_max", "||grad L(w - eta g) - grad L(w)||",
               "(b) gradient predictiveness"),
              (None, "effective_beta", "max ||grad change|| / ||eta g||", "(c) effective beta-smoothness"))
    seed = ctx.seeds[0]
    for ax, (low_key, high_key, ylabel, title) in zip(axes, panels):
        for arm, rs in results["runs"].items():
            r = rs[0]  # the first seed: a band is the range over the step sizes at each point, as in the paper
            steps = r["steps"]
            high = np.array(r[high_key], dtype=float)  # a missing value (None) is NaN, not drawn
            if low_key is not None:
                ax.fill_between(steps, np.array(r[low_key], dtype=float), high, color=colors[arm], alpha=0.35,
                                label=f"{ARMS[arm]} (seed {seed})")
            else:
                ax.plot(steps, high, color=colors[arm], label=f"{ARMS[arm]} (seed {seed})")
            # The other seeds' upper edges, thin: how much the picture varies with the seed.
            for other in rs[1:]:
                if len(other[high_key]) == len(steps):
                    ax.plot(steps, np.array(other[high_key], dtype=float), color=colors[arm], lw=0.5, alpha=0.6)
        ax.set(xlabel="training step", ylabel=ylabel + " (log scale)", title=title, yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="x-small")
    fig.suptitle(f"Along the gradient, eta = {settings['step_sizes'][0]:g} to {settings['step_sizes'][-1]:g} "
                 f"(lr {LR}); bands: range over the step sizes, thin lines: the other seeds' maxima "
                 f"(n = {len(ctx.seeds)}, {ctx.dataset})", fontsize="medium")
    ctx.save_figure(fig, "loss_landscape.png")
