"""population-statistics: the EMAs kept beside one run equal the running statistics a batch norm with that
momentum would hold; `normlab experiment population-statistics --quick --seeds 2` (shrunk by --scale) writes
every seed's values, intervals, verdicts by the rule and its plots."""

import copy

import numpy as np
import pytest

from normlab.experiments import EXPERIMENTS
from normlab.experiments.population_statistics import MovingAverages
from normlab.models import FullyConnectedNet
from normlab.nn.precise_bn import running_statistics_layers

VERDICTS = ("holds", "does not hold", "inconclusive")


def test_moving_averages_equal_the_running_statistics_of_each_momentum(rng):
    """A model at momentum 1 feeding MovingAverages, against models that run with each momentum: bit for bit."""
    momenta = [0.01, 0.3, None]
    base = FullyConnectedNet(5, (6, 4), 3, normalization="batch", rng=rng)
    twins = {m: copy.deepcopy(base) for m in momenta}
    layers = [bn for _, bn in running_statistics_layers(base)]
    for bn in layers:
        bn.momentum = 1.0
    for m, twin in twins.items():
        for _, bn in running_statistics_layers(twin):
            bn.momentum = m
    averages = MovingAverages(layers, momenta)
    for _ in range(7):
        x = (rng.standard_normal((8, 5)) * 2 + 1).astype(np.float32)
        base.forward(x)
        averages.update()
        for twin in twins.values():
            twin.forward(x)  # the same weights, so the same batch statistics
    for m, twin in twins.items():
        key = "None" if m is None else f"{m:g}"
        for (mean, var), (_, bn) in zip(averages.stats[key], running_statistics_layers(twin), strict=True):
            np.testing.assert_array_equal(mean, bn.running_mean)
            np.testing.assert_array_equal(var, bn.running_var)


@pytest.fixture(scope="module")
def quick_run(quick_outputs):
    return quick_outputs("population-statistics", scale=0.3)


def test_quick_run_writes_every_seed_intervals_verdicts_and_plots(quick_run):
    results, summary, d = quick_run
    assert results["experiment"] == "population-statistics"
    assert results["claim"] == EXPERIMENTS["population-statistics"].claim
    assert results["seeds"] == results["results"]["seeds"] == [0, 1]
    figures = ["population_statistics_training.png", "population_statistics_final.png"]
    assert results["figures"] == figures
    for figure in figures:
        assert (d / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"![{figure}]({figure})" in summary
    settings, r = results["settings"], results["results"]
    assert settings["momenta"] == ["0.01", "0.03", "0.1", "0.3", "0.5", "None"]
    assert len(r["runs"]) == 2
    for run in r["runs"]:
        assert run["status"] == "completed"
        assert set(run["final_error"]["ema"]) == set(settings["momenta"])
        assert set(run["final_error"]["precise"]) == {str(k) for k in settings["precise_ks"]}
        assert run["steps"][0] == 0 and run["steps"][-1] == settings["steps"]
        for curve in run["curves"].values():
            assert len(curve) == len(run["steps"]) and all(0 <= a <= 1 for a in curve)
    for iv in [r["table"]["train_mode"], *r["table"]["ema"].values(), *r["table"]["precise"].values()]:
        assert iv["n"] == 2 and iv["low"] <= iv["mean"] <= iv["high"]
    for c in r["comparisons"].values():
        assert c["verdict"].startswith(VERDICTS) and c["difference"]["n"] == 2
    assert "Wu & Johnson 2021" in summary and "10^3-10^4" in summary
    assert "Verdict rule (the same for every claim)" in summary
