"""Less sensitivity to initialization, after CS231n's "Batch normalization and initialization" experiment:
seven hidden layers of 50 ReLU units, every weight drawn from N(0, s^2) for scales s in logspace(-4, 0),
trained without and with batch norm, several draws (seeds) per scale.

Two things CS231n's version hides, made visible here:
- Batch norm divides by sqrt(var + eps). At small scales the pre-normalization variance falls below eps
  (1e-5): batch norm then does not normalize at all at initialization. A network with a tiny eps (1e-12)
  is run beside the default one, and the initial variance of the last hidden layer's pre-activations is
  recorded, so the eps regime shows.
- The optimizer: Adam rescales every gradient, which by itself rescues some tiny initializations; SGD with
  momentum is run as well.

The convolutional track (`init-scale-cnn`, `normlab experiment init-scale --model bn-cnn`) asks the same of
the slimmed bn-cnn of `normlab.experiments.cnn`: every convolution and linear weight from N(0, s^2), the same
three networks, with Adam only, at fewer scales and epochs (a NumPy CNN step costs about ten MLP steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from normlab import functional as F
from normlab.experiments import cnn
from normlab.experiments.base import Context, Report, markdown_table, mlp, pyplot, register_experiment, status_of, train
from normlab.experiments.stats import Interval, comparison, format_difference, format_interval, mean_band, mean_interval
from normlab.experiments.status import failed
from normlab.experiments.sweep import RunSpec
from normlab.models import FullyConnectedNet
from normlab.nn import Linear, Module
from normlab.nn.normalization import _BatchNorm
from normlab.optim import SGD, Adam

HIDDEN = (50,) * 7
NETWORKS = {"none": ("none", None), "batch": ("batch", 1e-5), "batch-tiny-eps": ("batch", 1e-12)}
LABELS = {"none": "baseline", "batch": "batch norm (eps 1e-5)", "batch-tiny-eps": "batch norm (eps 1e-12)"}
OPTIMIZERS = {"adam": "Adam, lr 1e-3", "sgd": "SGD + momentum 0.9, lr 0.01"}
WITHIN = 0.05  # a scale "trains well" when its best accuracy is within this of the network's best scale


def initial_signal(model: FullyConnectedNet, x: np.ndarray) -> dict:
    """At initialization, in training mode: the variance of the first and of the last hidden Linear's
    outputs (mean over the features of each one's variance over the batch: what batch norm compares with
    eps) and the std of the last hidden layer's output (what reaches the classifier). The buffers are
    restored afterwards."""
    layers = list(model)
    linears = [i for i, layer in enumerate(layers) if isinstance(layer, Linear)]
    saved = {name: np.array(b, copy=True) for name, b in model.named_buffers()}
    model.train()
    variances = {}
    try:
        h = x
        for i, layer in enumerate(layers[:-1]):
            h = layer.forward(h)
            if i in (linears[0], linears[-2]):
                variances[i] = float(np.mean(np.var(h.astype(np.float64), axis=0)))
    finally:
        model.load_state_dict(saved, strict=False)
    return {"first_pre_var": variances[linears[0]], "last_pre_var": variances[linears[-2]],
            "signal_std": float(np.std(h.astype(np.float64)))}


def initial_signal_cnn(model: Module, x: np.ndarray) -> dict:
    """`initial_signal` for the slimmed bn-cnn: the variance of the stem convolution's output and of the last
    residual block's second convolution (per channel over N, H, W, then the mean over the channels), and
    the std of the pooled features that reach the classifier. The buffers are restored afterwards."""
    layers = list(model)
    saved = {name: np.array(b, copy=True) for name, b in model.named_buffers()}
    model.train()

    def variance(h: np.ndarray) -> float:  # h (N, C, H, W)
        return float(np.mean(np.var(h.astype(np.float64), axis=(0, 2, 3))))

    try:
        h = layers[0].forward(x)  # the stem convolution
        first = variance(h)
        for layer in layers[1:-3]:  # up to the last residual block's input
            h = layer.forward(h)
        block = layers[-3]
        hidden, _ = F.relu_forward(block.bn1.forward(block.conv1.forward(h)))
        last = variance(block.conv2.forward(hidden))
        features = layers[-2].forward(block.forward(h))  # (N, C): the pooled features
    finally:
        model.load_state_dict(saved, strict=False)
    return {"first_pre_var": first, "last_pre_var": last, "signal_std": float(np.std(features.astype(np.float64)))}


def train_one(spec: RunSpec) -> dict:
    c = spec.config
    data = spec.data(c["n_train"], c["n_val"])
    norm, eps = NETWORKS[c["network"]]
    # The same standard normal draw at every scale, with and without batch norm (rng "init").
    if c.get("model") == cnn.MODEL:
        model = cnn.build_cnn(norm, data.input_shape, len(data.classes), spec.rng("init"), eps=eps or 1e-5,
                              weight_scale=c["weight_scale"])
        signal = initial_signal_cnn(model, data.x_train[:c["n_probe"]])
    else:
        model = mlp(spec, data, HIDDEN, normalization=norm, weight_scale=c["weight_scale"])
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eps = eps
        signal = initial_signal(model, data.x_train[:500])
    optimizer = (Adam(model.parameters(), lr=1e-3) if c["optimizer"] == "adam"
                 else SGD(model.parameters(), lr=0.01, momentum=0.9))
    r = train(model, optimizer, data, batch_size=50, rng=spec.rng("order"), epochs=c["epochs"],
              train_eval_size=c.get("train_eval_size", c["n_train"]))
    epochs = r.history.epochs
    status = status_of(r, None, 1 / len(data.classes))
    # A diverged run that never finished an epoch counts as chance (it learned nothing usable).
    best = max((e.val_acc for e in epochs), default=None)
    return {"status": status, **signal, "best_val_acc": best if best is not None else 1 / len(data.classes),
            "final_val_acc": epochs[-1].val_acc if epochs and not r.diverged else 1 / len(data.classes),
            "best_train_acc": max((e.train_acc for e in epochs), default=None), "seconds": r.seconds}


@dataclass(frozen=True)
class Track:
    """What differs between the experiment's tracks: the network, its optimizers, its sizes, and the words of
    the setting and the figure."""

    setting: Callable[[Context, dict], str]
    title: str  # the figure's title
    figure: str
    network: dict  # in the settings and every run's configuration
    optimizers: tuple[str, ...]
    counts: dict[str, tuple]  # ctx.count's (full, quick, minimum) of the scales, epochs, sizes


@register_experiment("init-scale", claim="batch norm makes networks less sensitive to the initial weight scale")
def run(ctx: Context) -> Report:
    return run_track(ctx, FC)


@register_experiment("init-scale-cnn", claim="in a CNN too, batch norm makes the network less sensitive to the "
                     "initial weight scale")
def run_cnn(ctx: Context) -> Report:
    return run_track(ctx, CNN)


def run_track(ctx: Context, track: Track) -> Report:
    counts = {k: ctx.count(*v) for k, v in track.counts.items()}
    scales = [float(s) for s in np.logspace(-4, 0, counts.pop("scales"))]
    settings = {**track.network, "activation": "relu", "weight_scales": scales,
                "networks": {k: {"normalization": n, "eps": e} for k, (n, e) in NETWORKS.items()},
                "optimizers": {opt: OPTIMIZERS[opt] for opt in track.optimizers}, "batch_size": 50, **counts}
    sizes = {k: counts.pop(k) for k in ("epochs", "n_train", "n_val")}  # counts: the CNN's train_eval_size, n_probe
    model = {"model": cnn.MODEL} if "model" in track.network else {}
    configs = [{**model, **counts, "network": net, "optimizer": opt, "weight_scale": s, **sizes}
               for opt in settings["optimizers"] for net in NETWORKS for s in scales]
    flat = ctx.runs(train_one, configs)
    runs: dict = {opt: {net: [] for net in NETWORKS} for opt in settings["optimizers"]}
    for config, per_seed in zip(configs, flat):
        runs[config["optimizer"]][config["network"]].append(per_seed)  # [scale][seed]
    k = len(ctx.seeds)

    def mean_over_scales(opt, net):  # per seed: the mean of the best accuracy over the scales
        return [float(np.mean([runs[opt][net][i][j]["best_val_acc"] for i in range(len(scales))])) for j in range(k)]

    def good_scales(opt, net):  # per seed: the scales within WITHIN of the best any network reached (that seed)
        out = []
        for j in range(k):
            top = max(runs[opt][other][i][j]["best_val_acc"] for other in NETWORKS for i in range(len(scales)))
            out.append(sum(runs[opt][net][i][j]["best_val_acc"] >= top - WITHIN for i in range(len(scales))))
        return out

    comparisons, summary = {}, {}
    for opt in settings["optimizers"]:
        values = {net: {"mean_over_scales": mean_over_scales(opt, net), "good_scales": good_scales(opt, net)}
                  for net in NETWORKS}
        summary[opt] = {net: {key: mean_interval(v).to_dict() for key, v in values[net].items()} for net in NETWORKS}
        for a, b in (("batch", "none"), ("batch-tiny-eps", "none"), ("batch-tiny-eps", "batch")):
            for key, scale in (("mean_over_scales", 100), ("good_scales", 1)):
                comparisons[f"{opt}: {a} - {b}: {key}"] = comparison(values[a][key], values[b][key], spec="+.1f",
                                                                     scale=scale).to_dict(predicted=False)
    results = {"seeds": list(ctx.seeds), "runs": runs, "summary": summary, "comparisons": comparisons}
    _plot(ctx, track, settings, results)
    return Report(settings, results, _summary(ctx, track, settings, results))


def _summary(ctx: Context, track: Track, settings: dict, results: dict) -> str:
    scales, runs, n = settings["weight_scales"], results["runs"], len(ctx.seeds)
    parts = []
    for opt, label in settings["optimizers"].items():
        rows = []
        for i, s in enumerate(scales):
            row = [f"{s:.1e}"]
            for net in NETWORKS:
                rs = runs[opt][net][i]
                bad = sum(failed(r["status"]) for r in rs)
                row.append(format_interval(mean_interval([r["best_val_acc"] for r in rs]), scale=100, n=False)
                           + (f" ({bad}/{n} failed)" if bad else ""))
            for net in NETWORKS:
                rs = runs[opt][net][i]
                row.append(f"{np.mean([r['first_pre_var'] for r in rs]):.0e} / {np.mean([r['last_pre_var'] for r in rs]):.0e}"
                           f" / {np.mean([r['signal_std'] for r in rs]):.0e}")
            rows.append(row)
        parts.append(f"**{label}** — best validation accuracy (%) over the epochs, mean ± 95% CI (n = {n})\n\n" +
                     markdown_table(["weight scale", *[LABELS[net] for net in NETWORKS],
                                     *[f"{LABELS[net]}: initial variance first / last hidden, output std"
                                       for net in NETWORKS]], rows))
    comp_rows = []
    for name, c in results["comparisons"].items():
        opt, pair, key = name.split(": ")
        a, b = pair.split(" - ")
        iv = Interval(**c["difference"])
        measure = ("mean over scales of the best val acc" if key == "mean_over_scales"
                   else f"scales within {WITHIN} of the seed's best run (of {len(scales)})")
        comp_rows.append([OPTIMIZERS[opt], f"{LABELS[a]} - {LABELS[b]}", measure,
                          format_difference(iv, scale=100 if key == "mean_over_scales" else 1,
                                            unit=" points" if key == "mean_over_scales" else " scales"),
                          c["verdict"]])
    comp_table = markdown_table(["optimizer", "comparison", "measure", "ours: mean [95% CI]", "verdict (> 0)"],
                                comp_rows)
    tables = "\n".join(parts)
    return f"""{track.setting(ctx, settings)}

{tables}
{comp_table}
"""


def _fc_setting(ctx: Context, settings: dict) -> str:
    scales, n = settings["weight_scales"], len(ctx.seeds)
    return f"""Setting: {ctx.dataset}, {settings['n_train']} training and {settings['n_val']} validation images (CS231n
uses 1000 and 1000; the split drawn by the seed), seven hidden layers of 50 ReLU units, every weight drawn from
N(0, s^2) for {len(scales)} scales s in logspace(-4, 0) (CS231n: 20; cut for the suite's budget), batches of 50,
{settings['epochs']} epochs, with Adam at 1e-3 (CS231n's) and with SGD + momentum 0.9 at 0.01. Seeds
{', '.join(map(str, ctx.seeds))} (n = {n}): each seed draws one standard normal weight draw (multiplied by s for
every scale and network), the batch order and the split. "Initial variance first / last hidden": the variance
of the first and the last hidden Linear's outputs at initialization on 500 training images (in that network,
after the batch norms before it), the quantity batch norm compares with eps; where it is far below 1e-5, batch
norm with the default eps hardly normalizes at initialization, and "output std" (of the last hidden layer)
shows what reaches the classifier. "Scales within {WITHIN}": scales whose best accuracy is within {WITHIN} of
the best any network reached with that seed and optimizer. A failed
run (diverged, did not learn, collapsed) is counted with its accuracy; one that never finished an epoch as
chance.

Anchor: CS231n assignment 2, "Batch normalization and initialization": with batch norm the best accuracies
are high over a much wider range of scales (a plot, no numbers)."""


def _cnn_setting(ctx: Context, settings: dict) -> str:
    scales, n = settings["weight_scales"], len(ctx.seeds)
    return f"""Setting: {ctx.dataset}, {settings['n_train']} training and {settings['n_val']} validation images
(the split drawn by the seed), the slimmed bn-cnn of `normlab.experiments.cnn` (a 3x3 stem of 8 channels, residual
blocks of 8 and 16 channels, global average pooling; without normalization its convolutions have biases),
every convolution and linear weight drawn from N(0, s^2) for {len(scales)} scales s in logspace(-4, 0) (the He
scale of its 3x3 convolutions is 0.12-0.47), batches of 50, {settings['epochs']} epochs, with Adam at 1e-3
only (the fully connected track also runs SGD; here it was cut to fit the compute budget). Seeds
{', '.join(map(str, ctx.seeds))} (n = {n}): each seed draws one standard normal weight draw (multiplied by s
for every scale and network), the batch order and the split.
"Initial variance first / last hidden": the variance (per channel over images and pixels, the quantity
batch norm compares with eps) of the stem convolution's output and of the last residual block's second
convolution at initialization on {settings['n_probe']} training images; "output std": of the pooled features
that reach the classifier. "Scales within {WITHIN}": scales whose best accuracy is within {WITHIN} of the best
any network reached with that seed and optimizer. A failed run is counted with its accuracy; one that never
finished an epoch as chance. The residual connections matter here: at tiny scales the skip path (a 1x1
convolution in the second block) carries the signal with one small factor instead of two.

Anchor: CS231n's plot for a 7-layer MLP (see the fully connected track); no CNN figure."""


def _plot(ctx: Context, track: Track, settings: dict, results: dict) -> None:
    plt = pyplot()
    optimizers = settings["optimizers"]
    fig, axes = plt.subplots(1, len(optimizers) + 1, figsize=(5 * len(optimizers) + 5, 4.2))
    scales = settings["weight_scales"]
    styles = {"none": ("o-", "black"), "batch": ("s-", "tab:blue"), "batch-tiny-eps": ("^--", "tab:orange")}
    for ax, opt in zip(axes, optimizers):
        for net, (style, color) in styles.items():
            ivs = [mean_interval([r["best_val_acc"] for r in rs]) for rs in results["runs"][opt][net]]
            means = np.array([100 * iv.mean for iv in ivs])
            mean_band(ax, scales, ivs, scale=100, fmt=style, alpha=0.15, color=color, label=LABELS[net])
            bad = [i for i, rs in enumerate(results["runs"][opt][net]) if any(failed(r["status"]) for r in rs)]
            ax.plot([scales[i] for i in bad], [means[i] for i in bad], "x", color="red", ms=9, mew=2,
                    label="a seed failed (did not learn, diverged or collapsed)" if net == "none" else None)
        ax.set_xscale("log")
        ax.set(xlabel="weight initialization scale s", ylabel="best validation accuracy (%)",
               title=f"{OPTIMIZERS[opt]} (mean, 95% CI band, n = {len(ctx.seeds)})")
        ax.title.set_fontsize("medium")
        ax.set_ylim(0, 112)  # room above the curves for the legend
        ax.legend(loc="upper center", fontsize="xx-small", ncol=2)
    ax = axes[-1]
    for net, (style, color) in styles.items():
        first = [np.mean([r["first_pre_var"] for r in rs]) for rs in results["runs"]["adam"][net]]
        std = [np.mean([r["signal_std"] for r in rs]) for rs in results["runs"]["adam"][net]]
        if net == "none":
            ax.loglog(scales, first, ":", color="gray", label="first hidden pre-activation variance (all)")
        ax.loglog(scales, std, style, color=color, label=f"last hidden output std, {LABELS[net]}")
    ax.axhline(1e-5, ls=":", color="gray", label="eps = 1e-5")
    ax.set(xlabel="weight initialization scale s", ylabel="variance or std at initialization (log scale)",
           title="the initial forward signal")
    ax.title.set_fontsize("medium")
    ax.legend(loc="lower right", fontsize="x-small")
    fig.suptitle(f"Initialization scale: {track.title} ({ctx.dataset})")
    ctx.save_figure(fig, track.figure)


FC = Track(_fc_setting, "7 x 50 ReLU, CS231n's setting", "init_scale.png", {"hidden": HIDDEN}, ("adam", "sgd"),
           {"scales": (7, 4, 3), "epochs": (10, 5, 1), "n_train": (1000, 500, 100), "n_val": (1000, 500, 50)})
CNN = Track(_cnn_setting, "slimmed bn-cnn", "init_scale_cnn.png", {"model": cnn.MODEL, "widths": cnn.WIDTHS},
            ("adam",), {"scales": (5, 3, 3), "epochs": (4, 1, 1), "n_train": (800, 200, 100), "n_val": (500, 200, 50),
                        "train_eval_size": (200, 100, 50), "n_probe": (200, 100, 50)})
