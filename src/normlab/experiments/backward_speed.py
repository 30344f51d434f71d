"""The staged backward (the computational graph walked node by node) against the simplified closed form,
across input sizes and in float32 and float64. CS231n reports the closed form about 1.7 to 2.1 times
faster; both compute the same gradients, which this experiment checks as it times them.

Times are medians of repeated samples after a warm-up call, the two backward passes timed in turn, so that
machine load affects both sides alike, in a process of their own with a fixed allocator (see
`normlab.experiments.backward_timing`).
"""

from __future__ import annotations

import math
import os
import statistics

from normlab.experiments.backward_timing import ALLOCATOR_ENV, DTYPES, measure
from normlab.experiments.base import Context, Report, fmt, markdown_table, pyplot, register_experiment
from normlab.experiments.stats import Interval, error_bars, format_ratio, log_ratio, mean_interval, verdict
from normlab.experiments.sweep import RunSpec

SHAPES = ((32, 64), (64, 256), (128, 512), (256, 1024), (512, 2048), (1024, 4096),
          (8, 16, 8, 8), (32, 32, 16, 16), (64, 64, 16, 16))
QUICK_SHAPES = ((32, 64), (128, 512), (8, 16, 8, 8))


def time_one_seed(spec: RunSpec) -> list[dict]:
    """Every shape and dtype timed once, in a fresh process, on inputs drawn from the seed."""
    shapes = [tuple(shape) for shape in spec.config["shapes"]]
    return measure(shapes, spec.config["repeats"], seed=int(spec.rng("inputs").integers(2**31)))


@register_experiment("backward-speed", claim="the simplified batch norm backward is faster than the staged one")
def run(ctx: Context) -> Report:
    shapes = ctx.pick(SHAPES, QUICK_SHAPES)
    settings = {"shapes": shapes, "dtypes": DTYPES, "repeats": ctx.count(11, 5), "allocator_env": ALLOCATOR_ENV,
                "backend": os.environ.get("NORMLAB_BACKEND", "auto")}
    # One after another in this process: a timing beside another run would measure the other run.
    (per_seed,) = ctx.runs(time_one_seed, [{"shapes": shapes, "repeats": settings["repeats"]}], parallel=False)
    rows = []
    for i, first in enumerate(per_seed[0]):
        seeds = [rs[i] for rs in per_seed]
        log_speedups = [math.log10(r["speedup_of_fastest"]) for r in seeds]
        iv = mean_interval(log_speedups)
        rows.append({"dtype": first["dtype"], "shape": first["shape"], "elements": first["elements"],
                     "staged_ms": statistics.median(r["staged_ms"] for r in seeds),
                     "simplified_ms": statistics.median(r["simplified_ms"] for r in seeds),
                     "speedup": statistics.median(r["speedup"] for r in seeds),
                     "speedup_of_fastest": 10 ** iv.mean, "speedup_of_fastest_per_seed": [r["speedup_of_fastest"]
                                                                                           for r in seeds],
                     "log10_speedup_interval": iv.to_dict(), "verdict": verdict(iv, show=log_ratio),
                     "max_relative_error": max(r["max_relative_error"] for r in seeds)})
        ctx.log(f"backward-speed: {first['dtype']} {tuple(first['shape'])}: {10 ** iv.mean:.2f}x")
    results = {"seeds": list(ctx.seeds), "timings": rows, "per_seed": per_seed}
    for name in DTYPES:
        speedups = [r["speedup_of_fastest"] for r in rows if r["dtype"] == name]
        results[name] = {"median_speedup": statistics.median(speedups), "min_speedup": min(speedups),
                         "max_speedup": max(speedups)}
    _plot(ctx, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    n = len(ctx.seeds)
    table = markdown_table(
        ["shape", "dtype", "staged (ms)", "simplified (ms)", f"speed-up of fastest samples, mean [95% CI], n = {n}",
         "verdict (> 1x)", "max relative difference"],
        [["x".join(map(str, r["shape"])), r["dtype"], fmt(r["staged_ms"], ".3f"), fmt(r["simplified_ms"], ".3f"),
          format_ratio(Interval(**r["log10_speedup_interval"]), ".2f"), r["verdict"], f"{r['max_relative_error']:.1e}"]
         for r in results["timings"]])
    holds = sum(r["verdict"] == "holds" for r in results["timings"])
    spread = "; ".join(f"{d}: {results[d]['min_speedup']:.2f}x to {results[d]['max_speedup']:.2f}x" for d in DTYPES)
    verdict_line = (f"The claim holds at {holds} of {len(results['timings'])} sizes (geometric means over the seeds: "
                    f"{spread}). Anchor: CS231n reports 1.7-2.1x (its own NumPy code, unstated machine).")
    backend = ("NumPy (NORMLAB_BACKEND=numpy): both sides in NumPy, as in CS231n" if settings["backend"] == "numpy"
               else f"NORMLAB_BACKEND={settings['backend']}: the simplified backward goes through normlab's dispatch, "
               "to the compiled numba kernel when numba is installed, while the staged one is NumPy")
    return f"""Backend: {backend}.

Setting: batch norm's training-mode backward (`batchnorm_backward_staged` against `batchnorm_backward`) on
random inputs of each shape, (N, D) and (N, C, H, W); median of {settings['repeats']} samples after a warm-up
call, the two timed in turn, on this machine ({os.cpu_count()} CPUs; a sample repeats a call until it lasts
about 2 ms), in a separate process whose malloc keeps freed memory (glibc's
`MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` at 1 GiB): otherwise the page faults of fresh temporaries,
which the staged backward makes several times as many of, vary with the allocator's history. Times and "speed-up" are medians; "speed-up of fastest samples" divides the two minima, which is
the measure the verdict uses: load from other processes only ever adds time to a sample, so on a shared
machine the minima are the steadier estimate of the computation. The last column is the largest relative error between the two sets of
gradients (dx, dgamma, dbeta).

Each seed (n = {n}) is a separate timing process on inputs drawn from that seed; the speed-up column is the
geometric mean of the seeds' speed-ups with the 95% t-interval of their log.

{table}
{verdict_line}
"""


def _plot(ctx: Context, results: dict) -> None:
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    plt = pyplot()
    fig, (ax_time, ax_speed) = plt.subplots(1, 2, figsize=(12, 4.4))
    colors = {"float32": "tab:blue", "float64": "tab:orange"}
    for dtype, color in colors.items():
        for ndim, marker, kind in ((2, "o", "(N, D)"), (4, "s", "(N, C, H, W)")):
            rows = sorted((r for r in results["timings"] if r["dtype"] == dtype and len(r["shape"]) == ndim),
                          key=lambda r: r["elements"])
            if not rows:
                continue
            n = [r["elements"] for r in rows]
            ax_time.plot(n, [r["staged_ms"] for r in rows], marker + "--", color=color, mfc="none",
                         label=f"staged, {dtype} {kind}")
            ax_time.plot(n, [r["simplified_ms"] for r in rows], marker + "-", color=color,
                         label=f"simplified, {dtype} {kind}")
            ivs = [Interval(**r["log10_speedup_interval"]) for r in rows]
            error_bars(ax_speed, n, ivs, transform=lambda v: 10 ** v, fmt=marker + "-", color=color, capsize=3,
                       label=f"{dtype} {kind} (95% CI)")
    ax_time.set(xscale="log", yscale="log", xlabel="elements in x", ylabel="milliseconds (median)",
                title="backward time (dashed, open: staged)")
    ax_time.legend(fontsize="x-small", ncol=2)
    ax_speed.axhspan(1.7, 2.1, color="gray", alpha=0.15, label="CS231n's 1.7-2.1x")
    top = max(r["speedup_of_fastest"] for r in results["timings"])
    ax_speed.set(xscale="log", yscale="log", xlabel="elements in x", ylabel="staged time / simplified time",
                 title=f"speed-up of the simplified backward (geometric mean, n = {len(results['seeds'])})", ylim=(1, max(5, 1.3 * top)))
    ax_speed.yaxis.set_major_locator(FixedLocator([1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 70, 100]))
    ax_speed.yaxis.set_major_formatter(ScalarFormatter())
    ax_speed.yaxis.set_minor_formatter(NullFormatter())
    ax_speed.legend(fontsize="small", loc="lower right")
    fig.suptitle("Batch norm backward: staged (node by node) against simplified (closed form)")
    ctx.save_figure(fig, "backward_speed.png")
