"""Noisy batch norm, after Santurkar et al. (2018), "How does batch normalization help optimization?",
section 2.1 and Figure 2: if batch norm helped by keeping each layer's input distribution stable (less
"internal covariate shift"), then a batch-normalized network whose normalized activations are shifted and
rescaled by noise that changes at every step should lose that help. The paper finds it does not: the noisy
network trains about as fast as the standard one, and far better than one without batch norm, although its
activations' distributions move more than those of the network without batch norm.

The network, data and measurements are the covariate-shift experiment's (Ioffe & Szegedy's Fig. 1 setting:
three hidden layers of 100 sigmoid units, batches of 60, N(0, 0.1^2) weights, the same draw in every arm), so
the percentile plot is the same one. Four arms per seed: without batch norm, with batch norm, and with batch
norm followed by `normlab.nn.DistributionShiftNoise` after every batch norm layer (a new random per-unit mean
and scale at every step, plus per-example jitter; identity in evaluation, where the test accuracy is measured),
all from the same N(0, 0.1^2) draw; and, as in covariate-shift, a Glorot-initialized network without batch
norm, so that "beats no batch norm" does not rest on a baseline that starts badly.
"""

from __future__ import annotations

import numpy as np

from normlab.experiments.base import Context, Report, markdown_table, register_experiment
from normlab.experiments.covariate_shift import (
    arm_summary,
    arm_table,
    completed,
    plot_shift,
    run_arms,
    shift_settings,
    train_and_track,
)
from normlab.experiments.stats import Interval, format_difference, paired_difference, verdict
from normlab.experiments.sweep import RunSpec
from normlab.models import FullyConnectedNet
from normlab.nn import BatchNorm1d, DistributionShiftNoise, Sequential

ARMS = ("none", "glorot", "batch", "noisy")
LABELS = {"none": "without batch norm, N(0, 0.1^2) init", "glorot": "without batch norm, Glorot init", "batch": "with batch norm",
          "noisy": "noisy batch norm"}
COLORS = {"none": "tab:gray", "glorot": "tab:green", "batch": "tab:blue", "noisy": "tab:red"}
NOISE = {"scale_spread": 0.75, "shift_spread": 1.0, "sample_std": 0.1}  # DistributionShiftNoise's defaults
MARGIN = 0.02  # "about as fast": the mean accuracy over the run within 2 points


def equivalence_verdict(difference: Interval, margin: float, scale: float = 100, spec: str = "+.1f") -> str:
    """The verdict on "the two are about equal": **holds** when the 95% interval of the paired difference lies
    within [-margin, margin], **does not hold** when it lies entirely outside it (beyond +margin or below
    -margin), and is inconclusive otherwise (the interval straddles a margin)."""
    if not difference.defined:
        return f"inconclusive (no interval: n = {difference.n})"
    if -margin <= difference.low and difference.high <= margin:
        return "holds"
    if difference.low > margin or difference.high < -margin:
        return "does not hold"
    return (f"inconclusive (CI [{format(scale * difference.low, spec)}, {format(scale * difference.high, spec)}] "
            f"straddles ±{scale * margin:g})")


def noisy_network(model: FullyConnectedNet, rng: np.random.Generator, **noise) -> Sequential:
    """The same layers with a DistributionShiftNoise (its own generator from rng) after every BatchNorm1d."""
    layers = []
    for layer in model:
        layers.append(layer)
        if isinstance(layer, BatchNorm1d):
            layers.append(DistributionShiftNoise(**noise, rng=rng.spawn(1)[0]))
    return Sequential(*layers)


def train_one(spec: RunSpec) -> dict:
    """One arm at one seed: the test-accuracy curve and the percentiles of the last sigmoid inputs."""
    arm = spec.config["arm"]

    def noisy(model):
        return noisy_network(model, spec.rng("noise"), **spec.config["noise"])

    return train_and_track(spec, "batch" if arm in ("batch", "noisy") else "none", arm == "glorot",
                           noisy if arm == "noisy" else None)


@register_experiment("noisy-batchnorm", claim="batch norm helps even when noise makes its outputs' distribution "
                                              "shift (Santurkar et al. 2018)")
def run(ctx: Context) -> Report:
    settings = shift_settings(ctx, ctx.count(4_000, 800, minimum=20), 80, 5, arms=list(ARMS), noise=NOISE,
                              margin=MARGIN)
    runs = run_arms(ctx, train_one, ARMS, settings, LABELS)
    comparisons = {}

    def compare(name, key, a, b, predicted):
        diff = paired_difference(completed(runs[a], key), completed(runs[b], key))
        if predicted == "equal":
            text = equivalence_verdict(diff, MARGIN)
        else:  # an accuracy's interval in points, the shift's in widths
            text = verdict(diff, predicted, *(("+.3f", 1.0) if key == "median_travel" else ("+.1f", 100)))
        comparisons[name] = {"key": key, "arms": [a, b], "difference": diff.to_dict(), "predicted": predicted,
                             "verdict": text}

    compare("noisy BN trains about as fast as BN", "mean_test_acc", "noisy", "batch", "equal")
    compare("noisy BN ends about as accurate as BN", "final_test_acc", "noisy", "batch", "equal")
    compare("noisy BN trains faster than no BN", "mean_test_acc", "noisy", "none", "positive")
    compare("noisy BN ends more accurate than no BN", "final_test_acc", "noisy", "none", "positive")
    compare("noisy BN trains faster than no BN (Glorot init)", "mean_test_acc", "noisy", "glorot", "positive")
    compare("noisy BN ends more accurate than no BN (Glorot init)", "final_test_acc", "noisy", "glorot", "positive")
    compare("noisy BN has more shift than no BN", "median_travel", "noisy", "none", "positive")
    compare("noisy BN has more shift than no BN (Glorot init)", "median_travel", "noisy", "glorot", "positive")
    compare("noisy BN has more shift than BN", "median_travel", "noisy", "batch", "positive")
    compare("BN has less shift than no BN", "median_travel", "batch", "none", "negative")
    summary = arm_summary(runs, ("mean_test_acc", "final_test_acc", "median_travel", "width_ratio"))
    results = {"seeds": list(ctx.seeds), "runs": runs, "summary": summary, "comparisons": comparisons}
    _plot(ctx, settings, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    n = len(ctx.seeds)
    table = arm_table(results["runs"], results["summary"], LABELS, align="lrrrrrrrl")
    anchors = {"noisy BN trains about as fast as BN": "Fig. 2: noisy BN's training curve about BN's (VGG, CIFAR-10)",
               "noisy BN ends about as accurate as BN": "Fig. 2: about the same test accuracy",
               "noisy BN trains faster than no BN": "Fig. 2: noisy BN well above the standard network",
               "noisy BN ends more accurate than no BN": "Fig. 2: higher",
               "noisy BN trains faster than no BN (Glorot init)": "— (the paper's baseline is its standard VGG)",
               "noisy BN ends more accurate than no BN (Glorot init)": "—",
               "noisy BN has more shift than no BN (Glorot init)": "Fig. 2",
               "noisy BN has more shift than no BN": "Fig. 2: noisy BN's activation distributions move more",
               "noisy BN has more shift than BN": "Fig. 2 (by construction)",
               "BN has less shift than no BN": "Ioffe & Szegedy's Fig. 1 (the covariate-shift experiment)"}
    predicts = {"equal": f"within ±{100 * MARGIN:g} points", "positive": "> 0", "negative": "< 0"}
    comp_rows = []
    for name, c in results["comparisons"].items():
        iv = Interval(**c["difference"])
        accuracy = c["key"] != "median_travel"
        shown = (format_difference(iv, "+.1f", 100, " points") if accuracy
                 else format_difference(iv, "+.3f", 1, " widths"))
        comp_rows.append([name, f"{c['key']}: {LABELS[c['arms'][0]]} - {LABELS[c['arms'][1]]}", shown, anchors[name],
                          predicts[c["predicted"]], c["verdict"]])
    comp_table = markdown_table(["claim", "paired difference", "ours: mean [95% CI]", "anchor", "claim predicts",
                                 "verdict"], comp_rows, align="llrlll")
    noise = settings["noise"]
    n_train = settings["n_train"] or "all"
    return f"""Setting: {ctx.dataset}, {n_train} training images, the covariate-shift experiment's network (three hidden
layers of 100 sigmoid units, weights from N(0, {settings['weight_scale']}^2), the same draw in every arm but the
Glorot-initialized one, which redraws its weights from Glorot's normal), plain
SGD at learning rate {settings['lr']}, batches of 60, {settings['steps']} steps. Seeds {', '.join(map(str, ctx.seeds))}
(n = {n}), each drawing the initial weights, the batch order, the split and the noise.

Noisy batch norm: after every batch norm layer, `DistributionShiftNoise` makes y = a * x + b; at every step
each unit j draws a mean scale alpha_j ~ U(1 - {noise['scale_spread']}, 1 + {noise['scale_spread']}) and a mean offset
mu_j ~ U(-{noise['shift_spread']}, {noise['shift_spread']}), and each activation a = alpha_j + {noise['sample_std']} e,
b = mu_j + {noise['sample_std']} d (e, d ~ N(0, 1)). So at every step the normalized activations leave with a
non-zero mean and a non-unit variance that change from step to step (the paper: "non-zero mean and non-unit
variance ... this noise distribution changes at each time step"; the ranges are our choice, not taken from
the paper). The noise is on in training and in the shift measurement, off in evaluation.

Measured as in covariate-shift: test accuracy on {settings['n_test']} test images and the 15th/50th/85th
percentiles of every last-layer sigmoid input on {settings['n_probe']} fixed test images every {settings['every']} steps
(and at steps {', '.join(map(str, settings['early_records'])) or 'none'}). "Median travel": the range of a unit's median
over training divided by its mean 15th-85th width (median over the units); "width max/min": its widest over its
narrowest spread. Cells: mean ± 95% CI half-width over the seeds.

"About as fast" is an equivalence claim, judged by its own rule: it **holds** when the 95% interval of the
paired difference lies within ±{100 * MARGIN:g} accuracy points, **does not hold** when it lies entirely outside,
and is inconclusive otherwise. The other claims use the shared rule below.

Anchor: Santurkar et al. (2018), Figure 2: VGG on CIFAR-10; standard, batch norm and noisy batch norm
networks; noisy batch norm trains about as fast as batch norm and much better than the standard network,
although its activations' distributions are visibly less stable than even the standard network's. A plot, no
numbers.

{table}
{comp_table}"""


def _plot(ctx: Context, settings: dict, results: dict) -> None:
    plot_shift(ctx, settings["steps"], results["runs"], "none", ("none", "batch", "noisy"), COLORS, LABELS,
               "Noisy batch norm", "noisy_batchnorm.png")
