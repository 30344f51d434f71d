"""The staged backward (the computational graph walked node by node) against the simplified closed form,
across input sizes and in float32 and float64. CS231n reports the closed form about 1.7 to 2.1 times
faster; both compute the same gradients, which this experiment checks as it times them.

Times are medians of repeated samples after a warm-up call, the two backward passes timed in turn, so that
machine load affects both sides alike, in a process of their own with a fixed allocator (see
`normlab.experiments.backward_timing`).
"""

from __future__ import annotations

import os
import statistics

from normlab.experiments.backward_timing import ALLOCATOR_ENV, DTYPES, measure
from normlab.experiments.base import Context, Report, fmt, markdown_table, pyplot, register_experiment

SHAPES = ((32, 64), (64, 256), (128, 512), (256, 1024), (512, 2048), (1024, 4096),
          (8, 16, 8, 8), (32, 32, 16, 16), (64, 64, 16, 16))
QUICK_SHAPES = ((32, 64), (128, 512), (512, 2048), (8, 16, 8, 8), (32, 32, 16, 16))


@register_experiment("backward-speed", claim="the simplified batch norm backward is faster than the staged one")
def run(ctx: Context) -> Report:
    shapes = ctx.pick(SHAPES, QUICK_SHAPES)
    settings = {"shapes": shapes, "dtypes": DTYPES, "repeats": ctx.count(21, 5), "allocator_env": ALLOCATOR_ENV}
    rows = measure(shapes, settings["repeats"], seed=int(ctx.rng("inputs").integers(2**31)))
    for r in rows:
        ctx.log(f"backward-speed: {r['dtype']} {tuple(r['shape'])}: staged {r['staged_ms']:.2f} ms, simplified "
                f"{r['simplified_ms']:.2f} ms ({r['speedup']:.2f}x)")
    results = {"timings": rows}
    for name in DTYPES:
        speedups = [r["speedup"] for r in rows if r["dtype"] == name]
        results[name] = {"median_speedup": statistics.median(speedups), "min_speedup": min(speedups),
                         "max_speedup": max(speedups)}
    _plot(ctx, results)
    return Report(settings, results, _summary(ctx, settings, results))


def _summary(ctx: Context, settings: dict, results: dict) -> str:
    table = markdown_table(
        ["shape", "dtype", "staged (ms)", "simplified (ms)", "speed-up", "speed-up of fastest samples",
         "max relative difference"],
        [["x".join(map(str, r["shape"])), r["dtype"], fmt(r["staged_ms"], ".3f"), fmt(r["simplified_ms"], ".3f"),
          f"{r['speedup']:.2f}x", f"{r['speedup_of_fastest']:.2f}x", f"{r['max_relative_error']:.1e}"]
         for r in results["timings"]])
    fastest = {d: [r["speedup_of_fastest"] for r in results["timings"] if r["dtype"] == d] for d in DTYPES}
    slower = [r for r in results["timings"] if r["speedup_of_fastest"] < 1]
    spread = "; ".join(
        f"{d}: {min(fastest[d]):.2f}x to {max(fastest[d]):.2f}x (medians: {results[d]['min_speedup']:.2f}x to "
        f"{results[d]['max_speedup']:.2f}x)" for d in DTYPES)
    if not slower:
        verdict = f"The simplified backward was faster at every size, by the fastest samples {spread}."
    else:
        verdict = (f"The simplified backward was not faster at {len(slower)} of {len(results['timings'])} sizes "
                   f"({', '.join('x'.join(map(str, r['shape'])) + ' ' + r['dtype'] for r in slower)}); by the "
                   f"fastest samples {spread}.")
    verdict += " CS231n reports 1.7-2.1x."
    return f"""Setting: batch norm's training-mode backward (`batchnorm_backward_staged` against `batchnorm_backward`) on
random inputs of each shape, (N, D) and (N, C, H, W); median of {settings['repeats']} samples after a warm-up
call, the two timed in turn, on this machine ({os.cpu_count()} CPUs; a sample repeats a call until it lasts
about 2 ms), in a separate process whose malloc keeps freed memory (glibc's
`MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` at 1 GiB): otherwise the page faults of fresh temporaries,
which the staged backward makes several times as many of, vary with the allocator's history. Times and "speed-up" are medians; "speed-up of fastest samples" divides the two minima, which is
the measure the verdict uses: load from other processes only ever adds time to a sample, so on a shared
machine the minima are the steadier estimate of the computation. The last column is the largest relative error between the two sets of
gradients (dx, dgamma, dbeta).

{table}
{verdict}
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
            ax_speed.plot(n, [r["speedup_of_fastest"] for r in rows], marker + "-", color=color,
                          label=f"{dtype} {kind}")
    ax_time.set(xscale="log", yscale="log", xlabel="elements in x", ylabel="milliseconds (median)",
                title="backward time (dashed, open: staged)")
    ax_time.legend(fontsize="x-small", ncol=2)
    ax_speed.axhspan(1.7, 2.1, color="gray", alpha=0.15, label="CS231n's 1.7-2.1x")
    top = max(r["speedup_of_fastest"] for r in results["timings"])
    ax_speed.set(xscale="log", yscale="log", xlabel="elements in x", ylabel="staged time / simplified time",
                 title="speed-up of the simplified backward (fastest samples)", ylim=(1, max(5, 1.3 * top)))
    ax_speed.yaxis.set_major_locator(FixedLocator([1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 70, 100]))
    ax_speed.yaxis.set_major_formatter(ScalarFormatter())
    ax_speed.yaxis.set_minor_formatter(NullFormatter())
    ax_speed.legend(fontsize="small", loc="lower right")
    fig.suptitle("Batch norm backward: staged (node by node) against simplified (closed form)")
    ctx.save_figure(fig, "backward_speed.png")
