"""Intervals and the one verdict rule every experiment uses.

Every measurement is repeated over seeds (a seed varies the initialization, the data order and the
train/validation split). A table shows the mean over the seeds with its 95% confidence interval (Student's
t, from scipy.stats) and n. A claim is judged on paired differences, seed by seed:

    holds          the 95% interval of (claimed better - other) lies entirely on the side the claim predicts
    does not hold  it lies entirely on the other side (the opposite is true, at this confidence)
    inconclusive   it contains zero: "inconclusive (CI [a, b])"

`VERDICT_RULE` says that once, in words, for the summaries. `comparison` makes one judged paired
difference (what results.json keeps of it), `format_ratio` shows a log10 ratio as a ratio with its interval,
and `error_bars` / `mean_band` draw intervals on a matplotlib axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
VERDICT_RULE = ("Verdict rule (the same for every claim): each seed gives a paired difference (the same seed, so the "
                "same initialization, data order and split, in both arms). The claim **holds** when the 95% "
                "t-interval of the mean difference lies entirely on the side the claim predicts, **does not hold** "
                "when it lies entirely on the other side, and is **inconclusive** when it contains zero.")


@dataclass(frozen=True)
class Interval:
    """A mean over n values and its confidence interval [low, high]. With n < 2, or missing values, the
    interval is undefined: low and high are NaN."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def mean_interval(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Interval:
    """The mean of `values` and its t-interval (scipy.stats.t). A None or NaN among the values makes the
    mean and the interval NaN: a table must show a missing value as missing, not average it away.

    Inputs: values, a sequence of n numbers.
    Returns: Interval(mean, low, high, n).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n = len(values)
    if n == 0:
        raise ValueError("values must not be empty")
    if any(v is None for v in values):
        return Interval(math.nan, math.nan, math.nan, n)
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return Interval(math.nan, math.nan, math.nan, n)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sem = float(stats.sem(x))
    if sem == 0.0:  # every value equal: no spread to scale the interval by
        return Interval(mean, mean, mean, n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n)


def paired_difference(a: Sequence[float | None], b: Sequence[float | None],
                      confidence: float = CONFIDENCE) -> Interval:
    """The mean of a[i] - b[i] over the seeds i, and its t-interval (a paired comparison)."""
    return mean_interval(paired_values(a, b), confidence)


def paired_values(a: Sequence[float | None], b: Sequence[float | None]) -> list[float | None]:
    """a[i] - b[i] for every seed i; None where either is missing (a difference of differences starts here)."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs as many values on each side, got {len(a)} and {len(b)}")
    return [None if x is None or y is None else x - y for x, y in zip(a, b)]


def verdict(difference: Interval, predicted: str = "positive", spec: str = "+.3f", scale: float = 1.0,
            show: Callable[[float], str] | None = None) -> str:
    """The verdict on a paired difference whose sign the claim predicts ("positive" or "negative"):
    "holds", "does not hold", or "inconclusive (CI [a, b])" (see the module docstring). The interval's
    bounds are printed multiplied by `scale` with format `spec`, or as show(bound) (e.g. a log ratio as
    a ratio)."""
    if predicted not in ("positive", "negative"):
        raise ValueError(f"predicted must be 'positive' or 'negative', got {predicted!r}")
    if not difference.defined:
        return f"inconclusive (no interval: n = {difference.n}{', a value is missing' if difference.n > 1 else ''})"
    sign = 1 if predicted == "positive" else -1
    if sign * difference.low > 0 and sign * difference.high > 0:
        return "holds"
    if sign * difference.low < 0 and sign * difference.high < 0:
        return "does not hold"
    if show is None:
        def show(bound: float) -> str:
            return format(scale * bound, spec)
    return f"inconclusive (CI [{show(difference.low)}, {show(difference.high)}])"


def log_ratio(bound: float) -> str:
    """A log10 ratio shown as the ratio: 0.3 -> "2.0x"."""
    return f"{10 ** bound:.2g}x"


def format_interval(iv: Interval, spec: str = ".1f", scale: float = 1.0, unit: str = "", n: bool = True) -> str:
    """ "37.1 ± 2.4 % (n=5)": the mean and the interval's half-width (t-intervals are symmetric), each times
    `scale`; "—" for a missing mean, the mean alone when the interval is undefined."""
    if not math.isfinite(iv.mean):
        return "—" + (f" (n={iv.n})" if n else "")
    text = format(scale * iv.mean, spec)
    if iv.defined:
        text += f" ± {format(scale * (iv.high - iv.low) / 2, spec)}"
    return text + unit + (f" (n={iv.n})" if n else "")


def format_difference(iv: Interval, spec: str = "+.1f", scale: float = 1.0, unit: str = "") -> str:
    """ "+23.0 [+20.1, +25.9] points": a paired difference's mean and interval."""
    if not math.isfinite(iv.mean):
        return "—"
    text = format(scale * iv.mean, spec)
    if iv.defined:
        text += f" [{format(scale * iv.low, spec)}, {format(scale * iv.high, spec)}]"
    return text + unit


@dataclass(frozen=True)
class Comparison:
    """A paired difference, the sign the claim predicts for it, and the verdict."""

    difference: Interval
    predicted: str
    verdict: str

    def to_dict(self, predicted: bool = True) -> dict:
        """What results.json keeps: {"difference": {...}, "predicted": ..., "verdict": ...} (without
        "predicted" when predicted=False, for the experiments whose claims are all "positive")."""
        out = {"difference": self.difference.to_dict(), "predicted": self.predicted, "verdict": self.verdict}
        if not predicted:
            del out["predicted"]
        return out


def comparison(a: Sequence[float | None], b: Sequence[float | None], predicted: str = "positive",
               spec: str = "+.3f", scale: float = 1.0, show: Callable[[float], str] | None = None) -> Comparison:
    """The claim "a - b has the sign `predicted`" judged on paired values (a[i] and b[i] from seed i):
    `paired_difference(a, b)` and its `verdict` (spec, scale and show format an inconclusive interval).

    Inputs: a, b, sequences of n numbers (None for a missing value).
    Returns: Comparison(difference, predicted, verdict).
    """
    difference = paired_difference(a, b)
    return Comparison(difference, predicted, verdict(difference, predicted, spec=spec, scale=scale, show=show))


def format_ratio(iv: Interval, spec: str = ".2g") -> str:
    """A mean log10 ratio and its interval shown as ratios (a geometric mean): "3.2x [1.8x, 5.6x]"; "—" for a
    missing mean, the ratio alone when the interval is undefined."""
    if not math.isfinite(iv.mean):
        return "—"
    text = f"{10 ** iv.mean:{spec}}x"
    return text + (f" [{10 ** iv.low:{spec}}x, {10 ** iv.high:{spec}}x]" if iv.defined else "")


def error_bars(ax, x: Sequence[float], intervals: Sequence[Interval], scale: float = 1.0,
               transform: Callable[[float], float] | None = None, **style):
    """Plot means with their intervals as error bars on the matplotlib axis `ax`: ax.errorbar(x, means,
    yerr) with every value (mean, low, high) multiplied by `scale`, or mapped by transform(value) (e.g.
    a log10 ratio to the ratio, lambda v: 10 ** v). A missing mean is not drawn; an undefined interval
    draws the mean without a bar. `style` goes to ax.errorbar (fmt, color, capsize, label, ...).
    Returns what ax.errorbar returns."""
    if transform is None:
        def transform(value: float) -> float:
            return scale * value
    means = np.array([transform(iv.mean) if math.isfinite(iv.mean) else np.nan for iv in intervals])
    below = [transform(iv.mean) - transform(iv.low) if iv.defined else 0.0 for iv in intervals]
    above = [transform(iv.high) - transform(iv.mean) if iv.defined else 0.0 for iv in intervals]
    return ax.errorbar(list(x), means, yerr=np.array([below, above]), **style)


def mean_band(ax, x: Sequence[float], intervals: Sequence[Interval], scale: float = 1.0, fmt: str = "-",
              alpha: float = 0.2, **style) -> None:
    """Plot the means as a line (format `fmt`) and the intervals as a shaded band on the axis `ax`, every
    value multiplied by `scale`; `style` (color, label, ...) goes to ax.plot and the band takes its color."""
    (line,) = ax.plot(list(x), [scale * iv.mean for iv in intervals], fmt, **style)
    ax.fill_between(list(x), [scale * iv.low for iv in intervals], [scale * iv.high for iv in intervals],
                    color=line.get_color(), alpha=alpha)


def curves_band(ax, x: Sequence[float], curves: Sequence[Sequence[float | None]], scale: float = 1.0,
                **style) -> None:
    """`mean_band` of per-seed curves over x: their mean and 95% interval at each point. A curve shorter
    than x (a run that diverged) is left out."""
    ivs = [mean_interval(list(column)) for column in zip(*[c for c in curves if len(c) == len(x)])]
    mean_band(ax, x, ivs, scale=scale, **style)
