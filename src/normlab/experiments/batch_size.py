"""Small batches, after the group norm paper's Figure 1 and Table 3 (Wu & He, 2018): validation error against
the batch size for batch norm, layer norm, group norm and batch renormalization.

The design, so that the comparison answers the question:
- A fixed number of steps at every batch size (not a fixed number of epochs, which gives batch 128 a
  sixty-fourth of batch 2's steps), the learning rate scaled with the square root of the batch size (which
  keeps the gradient noise of SGD about constant) and decayed by a cosine.
- Batch renorm at batch norm's running-statistics momentum (0.1), so the two differ only in renorm's
  correction; renorm's own default (momentum 0.01, Keras's renorm_momentum 0.99) is a separate row.
- Two evaluations of every batch-statistics network: with its running statistics, and with statistics
  recomputed after training from training batches of 128 (the running statistics reset and replaced by the
  average over those batches). The first minus the second is the error of the running estimate; what
  remains at small batches is the training itself.

Batch renorm relaxes rmax and dmax over Ioffe's 5000 -> 40000 / 25000 steps of a long run; here the same
fractions of each run's length (plain batch norm for the first 5 % of the steps, rmax reaching 3 at 40 %,
dmax reaching 5 at 25 %).

The convolutional track (`batch-size-cnn`, `normlab experiment batch-size --model bn-cnn`) follows the group
norm paper's own protocol instead: the slimmed bn-cnn (`normlab.experiments.cnn`) with batch norm, group norm,
batch renorm, ghost batch norm and no normalization, trained for a fixed number of epochs at every batch size
with the learning rate scaled linearly with the batch size (Goyal et al.'s rule, which the paper uses).
"""

from __future__ import annotations

import math

import numpy as np

from normlab.experiments import cnn
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
from normlab.experiments.stats import (
    Interval,
    comparison,
    error_bars,
    format_difference,
    format_interval,
    mean_interval,
    paired_difference,
    paired_values,
)
from normlab.experiments.status import failed
from normlab.experiments.sweep import RunSpec
from normlab.nn import RenormSchedule
from normlab.nn.normalization import _BatchNorm
from normlab.optim import SGD, Cosine

HIDDEN = (256, 256)
BATCH_SIZES = (2, 4, 8, 32, 128)
ARMS = {"batch": ("batch", 0.1), "layer": ("layer", None), "group": ("group", None), "renorm": ("renorm", 0.1),
        "renorm-0.01": ("renorm", 0.01)}
LABELS = {"batch": "batch norm", "layer": "layer norm", "group": "group norm (32 groups)",
          "renorm": "batch renorm (momentum 0.1)", "renorm-0.01": "batch renorm (its default momentum 0.01)"}
BASE_LR, BASE_BATCH = 0.05, 32  # lr = BASE_LR * sqrt(batch / BASE_BATCH)
RECOMPUTE_BATCH, RECOMPUTE_BATCHES = 128, 20


def renorm_schedule(total_steps: int) -> RenormSchedule:
    """Ioffe's schedule (warm-up 5000, rmax full at 40000, dmax full at 25000 steps) read as fractions of a
    100000-step run and scaled to `total_steps`."""
    return RenormSchedule(warmup_steps=round(0.05 * total_steps), rmax_full_at=round(0.40 * total_steps),
                          dmax_full_at=round(0.25 * total_steps))


def recompute_statistics(model, x: np.ndarray, batch_size: int, batches: int, rng: np.random.Generator) -> None:
    """Replace every batch norm's running statistics by their average over `batches` training batches of
    `batch_size` drawn from x (training-mode forwards; the parameters are not touched), or over as many
    whole batches as x holds when it holds fewer (at least one, of all of x when x is smaller than a batch)."""
    batch_size = min(batch_size, len(x))
    batches = max(1, min(batches, len(x) // batch_size))
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # the cumulative average of the batches that follow
    model.train()
    order = rng.permutation(len(x))
    try:
        for i in range(batches):
            model.forward(x[order[i * batch_size:(i + 1) * batch_size]])
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum
        model.eval()


def train_one(spec: RunSpec) -> dict:
    """One normalization at one batch size: the validation error with running and recomputed statistics."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    norm, momentum = ARMS[c["arm"]]
    model = mlp(spec, data, HIDDEN, normalization=norm, renorm_schedule=renorm_schedule(c["steps"]))
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.momentum = momentum
    b = c["batch_size"]
    every = max(1, c["steps"] // c["evaluations"])
    r = train(model, SGD(model.parameters(), lr=c["lr"], momentum=0.9), data, batch_size=b, rng=spec.rng("order"),
              steps=c["steps"], schedule=Cosine(c["steps"]), every=every, train_eval_size=1000,
              probe=lambda trainer: {"val_acc": trainer.accuracy(data.x_val, data.y_val)})
    status = status_of(r, "val_acc", 1 / len(data.classes))
    if status.startswith("diverged"):
        return {"status": status, "val_error": None, "val_error_recomputed": None, "seconds": r.seconds}
    steps, acc = r.series("val_acc")
    return {"status": status, "steps": steps, "val_acc": acc,
            **final_errors(r, data, spec, 1 - acc[-1], norm in ("batch", "renorm")), "seconds": r.seconds}


def final_errors(r, data, spec: RunSpec, error: float, recompute: bool) -> dict:
    """The validation error after training with the running statistics (`error`), and, for an arm with
    running statistics (recompute=True), with statistics recomputed from training batches."""
    recomputed = error
    if recompute:
        recompute_statistics(r.trainer.model, data.x_train, RECOMPUTE_BATCH, RECOMPUTE_BATCHES, spec.rng("recompute"))
        recomputed = 1 - r.trainer.accuracy(data.x_val, data.y_val)
    return {"val_error": error, "val_error_recomputed": recomputed}


def judge(runs: dict, small: str, ref: str, labels: dict[str, str], against, changes: dict[str, str]) -> dict:
    """The comparisons both tracks judge, each predicted positive: batch norm's error at the smallest batch
    minus at the reference, with running and with recomputed statistics, and running minus recomputed at the
    smallest; batch norm minus each arm of `against` at the smallest batch; and batch norm's change from the
    reference to the smallest minus that of each arm of `changes` (arm -> its name there)."""
    comparisons = {}

    def errors(arm, b, key="val_error"):
        return [r[key] for r in runs[arm][b]]

    def compare(name, a, b):
        comparisons[name] = comparison(a, b, spec="+.1f", scale=100).to_dict()

    compare(f"batch norm: error at {small} - at {ref}", errors("batch", small), errors("batch", ref))
    compare(f"batch norm: error at {small} - at {ref}, recomputed statistics",
            errors("batch", small, "val_error_recomputed"), errors("batch", ref, "val_error_recomputed"))
    compare(f"batch norm at {small}: running - recomputed statistics", errors("batch", small),
            errors("batch", small, "val_error_recomputed"))
    for arm in against:
        compare(f"at {small}: batch norm - {labels[arm]}", errors("batch", small), errors(arm, small))
    for arm, name in changes.items():
        compare(f"(batch norm's error at {small} - at {ref}) - ({name}'s)",
                paired_values(errors("batch", small), errors("batch", ref)),
                paired_values(errors(arm, small), errors(arm, ref)))
    return comparisons


def log_errors(ctx: Context, runs: dict, sizes, labels: dict[str, str]) -> None:
    """Per arm, "2: 50.5 ± 4.2, 32: 13.1 ± 0.3": its mean validation errors (%) by batch size."""
    for arm, row in error_table(runs, sizes).items():
        ctx.log(f"{ctx.name}: {labels[arm]}: " + ", ".join(
            f"{b}: {format_interval(Interval(**cell['val_error']), scale=100, n=False)}" for b, cell in row.items()))


def error_table(runs: dict, sizes) -> dict:
    """table[arm][batch][key]: the mean and interval over the seeds of the validation error, with running
    ("val_error") and recomputed ("val_error_recomputed") statistics."""
    return {arm: {str(b): {key: mean_interval([r[key] for r in row[str(b)]]).to_dict()
                           for key in ("val_error", "val_error_recomputed")} for b in sizes}
            for arm, row in runs.items()}


def errors_markdown(table: dict, runs: dict, sizes, labels: dict[str, str], recomputed, n: int) -> str:
    """The validation error (%) of every arm at every batch size, mean ± half-width and how many runs failed;
    below each arm of `recomputed`, with recomputed statistics; "= batch norm" where ghost batch norm's
    runs are batch norm's."""

    def cell(arm, b, key):
        if arm == "ghost" and not cnn_runs_needed(arm, b):
            return "= batch norm"
        bad = [r["status"] for r in runs[arm][str(b)] if failed(r["status"])]
        return format_interval(Interval(**table[arm][str(b)][key]), scale=100, n=False) + (
            f" ({len(bad)} failed)" if bad else "")

    rows = []
    for arm, label in labels.items():
        rows.append([label, *[cell(arm, b, "val_error") for b in sizes]])
        if arm in recomputed:
            rows.append([f"{label}, recomputed statistics", *[cell(arm, b, "val_error_recomputed") for b in sizes]])
    return markdown_table([f"validation error (%), n = {n}", *[f"batch {b}" for b in sizes]], rows)


def _anchor(name: str, comparison: dict) -> str:
    """The published finding a comparison of either track is set against."""
    if name.startswith("batch norm: error at") and "recomputed" not in name:
        return "GN paper: +11.1 points (23.6 -> 34.7 %, ResNet-50, ImageNet, 32 -> 2 images/GPU)"
    if name.startswith("(batch norm's error") and "group" in name:
        return "GN paper: +11.1 points (batch norm +11.1, group norm about 0)"
    if name.startswith("at ") and "group" in name:
        return "GN paper: +10.6 points at 2 images/GPU (34.7 vs 24.1 %)"
    if name.startswith("at ") and "renorm" in name:
        return "Ioffe 2017: renorm recovers most of the loss at small batches (Inception, 4 per batch)"
    if name.startswith("at ") and "ghost" in name:
        return "Hoffer et al. 2017: ghost batch norm narrows the large-batch generalization gap"
    return "—"


@register_experiment("batch-size", claim="batch norm behaves poorly with very small batches; its relatives do not")
def run(ctx: Context) -> Report:
    sizes = ctx.pick(BATCH_SIZES, (2, 32))
    steps = ctx.count(1200, 400, minimum=20)
    settings = {"hidden": HIDDEN, "activation": "relu", "weight_scale": "he", "batch_sizes": sizes, "steps": steps,
                "arms": {a: {"normalization": n, "momentum": m} for a, (n, m) in ARMS.items()}, "optimizer": "sgd",
                "momentum": 0.9, "lr": {str(b): BASE_LR * math.sqrt(b / BASE_BATCH) for b in sizes},
                "schedule": "cosine", "n_train": ctx.count(None, 10_000, minimum=256),
                "n_val": ctx.count(5000, 1000, minimum=100), "group_norm_groups": 32, "evaluations": 5,
                "recompute": {"batch_size": RECOMPUTE_BATCH, "batches": RECOMPUTE_BATCHES}}
    common = {k: settings[k] for k in ("steps", "n_train", "n_val", "evaluations")}
    configs = [{"arm": arm, "batch_size": b, "lr": settings["lr"][str(b)], **common} for arm in ARMS for b in sizes]
    runs = nested(configs, ctx.runs(train_one, configs), "arm", "batch_size")
    log_errors(ctx, runs, sizes, LABELS)
    small, ref = str(min(sizes)), str(32 if 32 in sizes else max(sizes))
    comparisons = judge(runs, small, ref, LABELS, ("group", "layer", "renorm", "renorm-0.01"), {"group": "group norm"})
    results = {"seeds": list(ctx.seeds), "runs": runs, "table": error_table(runs, sizes), "comparisons": comparisons,
               "small": small, "reference": ref}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    n = len(ctx.seeds)
    error_table = errors_markdown(results["table"], results["runs"], settings["batch_sizes"], LABELS,
                                  [arm for arm, (_, momentum) in ARMS.items() if momentum is not None], n)
    comp_table = comparison_table(results["comparisons"], "paired difference of validation error", _anchor)
    n_train = settings["n_train"] or "all"
    return f"""Setting: {ctx.dataset}, {n_train} training and {settings['n_val']} validation images (the split drawn by
the seed), a fully connected network of two hidden layers of 256 ReLU units with each normalization after each
hidden layer, SGD with momentum 0.9, learning rate {BASE_LR} x sqrt(batch / {BASE_BATCH}) with cosine decay,
**{settings['steps']} steps at every batch size** (a fixed number of steps, so batch 2 sees
{2 * settings['steps']} examples and batch 128 sees {128 * settings['steps']}); seeds
{', '.join(map(str, ctx.seeds))} (n = {n}), each drawing the initial weights (shared by every arm and batch
size), the batch order and the split. The error is measured after the last step in evaluation mode, with the
running statistics, and for batch norm and batch renorm also with statistics recomputed from
{RECOMPUTE_BATCHES} training batches of {RECOMPUTE_BATCH}. Cells: mean ± 95% CI half-width.

Batch renorm: Ioffe's rmax/dmax schedule scaled to the run's length (see the module docstring); its main row
uses batch norm's momentum 0.1, so the two differ only in renorm's correction. Group norm: 32 groups of 8.

Anchor: Wu & He (2018), Figure 1 / Table 3: ResNet-50 on ImageNet, batch norm 23.6 % error at 32 images per
GPU and 34.7 % at 2; group norm about 24.1 % at both. What differs: an MLP on {ctx.dataset}, a fixed number of
steps instead of a fixed number of epochs, the square-root instead of the linear learning-rate rule.

{error_table}
{comp_table}
Reading the rows: "running - recomputed statistics" is how much of batch norm's small-batch error comes from
its running estimate; "error at {results['small']} - at {results['reference']}, recomputed statistics" is what
remains, the training itself.
"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    sizes = settings["batch_sizes"]
    plot_errors(ctx, sizes, results["table"], {arm: (LABELS[arm], sizes) for arm in ARMS}, "batch size",
                f"Validation error against batch size, {settings['steps']} steps each (mean ± 95% CI, "
                f"n = {len(ctx.seeds)})", "batch_size.png")


def plot_errors(ctx: Context, sizes: list[int], table: dict, arms: dict[str, tuple[str, list[int]]], xlabel: str,
                title: str, filename: str) -> None:
    """Validation error against batch size, one line of error bars per arm (arms[arm] = (label, the batch
    sizes it shows)), and batch norm with recomputed statistics dashed, the batch axis shrinking to the right
    as in the group norm paper."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    markers = dict(zip(arms, "osD^v"))
    for i, (arm, (label, shown)) in enumerate(arms.items()):
        ivs = [Interval(**table[arm][str(b)]["val_error"]) for b in shown]
        xs = [b * 1.03 ** (i - 2) for b in shown]  # a small offset per arm so the error bars do not overlap
        error_bars(ax, xs, ivs, scale=100, marker=markers[arm], capsize=3, label=label,
                   lw=2.5 if arm == "batch" else 1.2)
        if arm == "batch":
            rec = [Interval(**table[arm][str(b)]["val_error_recomputed"]) for b in shown]
            ax.plot(xs, [100 * iv.mean for iv in rec], ls="--", color="tab:blue", lw=1,
                    label="batch norm, statistics recomputed from batches of 128")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.invert_xaxis()
    ax.set(xlabel=xlabel, ylabel="validation error (%)", title=title)
    ax.title.set_fontsize("medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="x-small")
    ctx.save_figure(fig, filename)


# -- the convolutional track ---------------------------------------------------------------------------

CNN_ARMS = ("batch", "group", "renorm", "ghost", "none")
CNN_LABELS = {"batch": "batch norm", "group": f"group norm ({cnn.CHANNELS_PER_GROUP} channels a group)",
              "renorm": "batch renorm", "ghost": "ghost batch norm (virtual batches of 8)",
              "none": "no normalization"}
CNN_BASE_LR = 0.03  # at batch 32; lr = CNN_BASE_LR * batch / 32 (the linear rule)
VIRTUAL_BATCH = 8  # ghost batch norm's chunk: at batches up to 8 it is plain batch norm
BATCH_STATISTICS = ("batch", "renorm", "ghost")  # the arms with running statistics to recompute


def train_one_cnn(spec: RunSpec) -> dict:
    """One normalization of the CNN at one batch size for a fixed number of epochs: the validation error
    after each epoch, and after the last with running and with recomputed statistics."""
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    b = c["batch_size"]
    steps = c["epochs"] * math.ceil(len(data.x_train) / b)
    model = cnn.build_cnn(c["arm"], data.input_shape, len(data.classes), spec.rng("init"),
                          renorm_schedule=renorm_schedule(steps), virtual_batch_size=VIRTUAL_BATCH)
    r = train(model, SGD(model.parameters(), lr=c["lr"], momentum=0.9), data, batch_size=b, rng=spec.rng("order"),
              epochs=c["epochs"], schedule=Cosine(steps), train_eval_size=c["train_eval_size"])
    status = status_of(r, None, 1 / len(data.classes))
    epochs = r.history.epochs
    if status.startswith("diverged") or not epochs:
        return {"status": status, "val_error": None, "val_error_recomputed": None, "seconds": r.seconds}
    return {"status": status, "steps": r.steps, "epochs": [e.epoch for e in epochs],
            "val_acc": [e.val_acc for e in epochs],
            **final_errors(r, data, spec, 1 - epochs[-1].val_acc, c["arm"] in BATCH_STATISTICS), "seconds": r.seconds}


def cnn_runs_needed(arm: str, batch_size: int) -> bool:
    """Ghost batch norm with one virtual batch is batch norm: those runs are batch norm's, not run twice."""
    return not (arm == "ghost" and batch_size <= VIRTUAL_BATCH)


@register_experiment("batch-size-cnn", claim="in a CNN too, batch norm suffers with very small batches; its "
                     "relatives do not")
def run_cnn(ctx: Context) -> Report:
    sizes = ctx.pick(BATCH_SIZES, (2, 32))
    settings = {"model": cnn.MODEL, "widths": cnn.WIDTHS, "batch_sizes": sizes, "arms": CNN_ARMS,
                "epochs": ctx.count(3, 1), "n_train": ctx.count(2000, 500, minimum=64),
                "n_val": ctx.count(1000, 200, minimum=50), "train_eval_size": ctx.count(200, 100, minimum=20),
                "optimizer": "sgd", "momentum": 0.9, "lr": {str(b): CNN_BASE_LR * b / BASE_BATCH for b in sizes},
                "schedule": "cosine", "group_norm_channels_per_group": cnn.CHANNELS_PER_GROUP,
                "virtual_batch_size": VIRTUAL_BATCH, "renorm_momentum": 0.1,
                "recompute": {"batch_size": RECOMPUTE_BATCH, "batches": RECOMPUTE_BATCHES}}
    common = {k: settings[k] for k in ("epochs", "n_train", "n_val", "train_eval_size")}
    configs = [{"model": cnn.MODEL, "arm": arm, "batch_size": b, "lr": settings["lr"][str(b)], **common}
               for arm in CNN_ARMS for b in sizes if cnn_runs_needed(arm, b)]
    runs = nested(configs, ctx.runs(train_one_cnn, configs), "arm", "batch_size")
    for b in sizes:
        if not cnn_runs_needed("ghost", b):
            runs.setdefault("ghost", {})[str(b)] = runs["batch"][str(b)]
    runs = {arm: runs[arm] for arm in CNN_ARMS}
    log_errors(ctx, runs, sizes, CNN_LABELS)
    small, ref, large = str(min(sizes)), str(32 if 32 in sizes else max(sizes)), str(max(sizes))
    # Each arm's change from the reference batch to the smallest, measured; the claims are judged below.
    changes = {arm: paired_difference([r["val_error"] for r in runs[arm][small]],
                                      [r["val_error"] for r in runs[arm][ref]]).to_dict() for arm in CNN_ARMS}
    against = ("group", "renorm", "none")
    comparisons = judge(runs, small, ref, CNN_LABELS, against, {arm: CNN_LABELS[arm] for arm in against})
    if int(large) > VIRTUAL_BATCH:
        comparisons[f"at {large}: batch norm - {CNN_LABELS['ghost']}"] = comparison(
            [r["val_error"] for r in runs["batch"][large]], [r["val_error"] for r in runs["ghost"][large]],
            spec="+.1f", scale=100).to_dict()
    results = {"seeds": list(ctx.seeds), "runs": runs, "table": error_table(runs, sizes), "changes": changes,
               "comparisons": comparisons, "small": small, "reference": ref, "large": large}
    _plot_cnn(ctx, settings, results)
    return Report(settings, results, _summary_cnn(ctx, settings, results))


def _summary_cnn(ctx: Context, settings: dict, results: dict) -> str:
    n = len(ctx.seeds)
    error_table = errors_markdown(results["table"], results["runs"], settings["batch_sizes"], CNN_LABELS,
                                  BATCH_STATISTICS, n)
    small, ref = results["small"], results["reference"]
    paper_change = {"batch": "+11.1 (23.6 -> 34.7 %)", "group": "0.0 (24.1 -> 24.1 %)"}
    change_table = markdown_table(
        ["normalization", f"error at {small} - at {ref}: mean [95% CI], n = {n}", "GN paper (ResNet-50, ImageNet)"],
        [[CNN_LABELS[arm], format_difference(Interval(**results["changes"][arm]), scale=100, unit=" points"),
          paper_change.get(arm, "—")] for arm in CNN_ARMS])
    comp_table = comparison_table(results["comparisons"], "paired difference of validation error", _anchor)
    pooled = ", ".join(f"{b} x {s} x {s} = {b * s * s}" for b in (2, 32) for s in (14, 7))
    return f"""Setting: {ctx.dataset} (28x28), {settings['n_train']} training and {settings['n_val']} validation images (the
split drawn by the seed), the slimmed bn-cnn (`normlab.experiments.cnn`: a 3x3 stem of 8 channels, a residual
block of 8 at 14x14 and one of 16 at 7x7, global average pooling; each normalization in every normalization
slot), SGD with momentum 0.9, **{settings['epochs']} epochs at every batch size** (the group norm paper's
protocol: a fixed number of epochs, so batch 2 takes {settings['epochs'] * settings['n_train'] // 2} steps and batch
128 takes {settings['epochs'] * math.ceil(settings['n_train'] / 128)}), learning rate {CNN_BASE_LR} x batch / {BASE_BATCH}
(the linear rule) with cosine decay; seeds {', '.join(map(str, ctx.seeds))} (n = {n}), each drawing the initial
weights (shared by every batch size), the batch order and the split. The error is measured after the last
epoch in evaluation mode with the running statistics, and for the batch-statistics arms also with statistics
recomputed from {RECOMPUTE_BATCHES} training batches of {RECOMPUTE_BATCH}. Group norm: groups of
{cnn.CHANNELS_PER_GROUP} channels. Batch renorm: momentum 0.1 (batch norm's), Ioffe's rmax/dmax schedule scaled to
the run. Ghost batch norm: virtual batches of {VIRTUAL_BATCH}, so at batches up to {VIRTUAL_BATCH} it is batch norm
(its cells there are batch norm's runs). Cells: mean ± 95% CI half-width.

Pooling over H x W: a batch norm channel's statistics here average N x H x W values ({pooled} at the 14x14 and
7x7 layers for batches 2 and 32), where the fully connected track's average N (2 at batch 2). Neighbouring
pixels are correlated, so the effective sample is smaller than N x H x W, but far larger than N: the noise of
the batch statistics at batch 2 is much smaller than in an MLP at batch 2.

Anchor: Wu & He (2018), Figure 1 / Table 3: ResNet-50 on ImageNet, batch norm 23.6 % error at 32 images per
GPU and 34.7 % at 2 (+11.1 points); group norm 24.1 % at both. What differs: a network of two residual blocks
and 8-16 channels on {ctx.dataset}, {settings['epochs']} epochs of {settings['n_train']} images instead of 100
epochs of ImageNet.

{error_table}
How each normalization's error changes from batch {ref} to batch {small} (paired by seed; measured, not judged):

{change_table}
The claims, judged:

{comp_table}
Reading the rows: "running - recomputed statistics" is how much of batch norm's small-batch error comes from
its running estimate; "error at {small} - at {ref}, recomputed statistics" is what remains, the training itself.
At batch 128 the fixed number of epochs leaves few steps, so every arm is less trained there.
"""


def _plot_cnn(ctx: Context, settings: dict, results: dict) -> None:
    sizes = settings["batch_sizes"]
    # Ghost batch norm's batches up to its virtual batch are batch norm's runs: not drawn twice.
    arms = {arm: (CNN_LABELS[arm], [b for b in sizes if cnn_runs_needed(arm, b)]) for arm in CNN_ARMS}
    plot_errors(ctx, sizes, results["table"], arms, "batch size (images)",
                f"CNN: validation error against batch size, {settings['epochs']} epochs each (mean ± 95% CI, "
                f"n = {len(ctx.seeds)})", "batch_size_cnn.png")
