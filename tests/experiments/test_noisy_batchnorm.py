"""`normlab experiment noisy-batchnorm --quick --seeds 2`, shrunk by the hidden --scale, on real Fashion-MNIST:
the files, every seed's values, the shift measured as in covariate-shift, the verdicts by their rules."""


import numpy as np
import pytest

from normlab.experiments import EXPERIMENTS
from normlab.experiments.noisy_batchnorm import equivalence_verdict
from normlab.experiments.stats import Interval

VERDICTS = ("holds", "does not hold", "inconclusive")


@pytest.fixture(scope="module")
def result(quick_outputs):
    return quick_outputs("noisy-batchnorm", scale=0.25)


def test_noisy_batchnorm_quick_run(result):
    results, summary, d = result
    assert results["experiment"] == "noisy-batchnorm" and results["claim"] == EXPERIMENTS["noisy-batchnorm"].claim
    assert results["seeds"] == [0, 1] and results["figures"] == ["noisy_batchnorm.png"]
    assert (d / "noisy_batchnorm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![noisy_batchnorm.png](noisy_batchnorm.png)" in summary and "Verdict rule" in summary
    settings, r = results["settings"], results["results"]
    assert settings["noise"] == {"scale_spread": 0.75, "shift_spread": 1.0, "sample_std": 0.1}
    assert list(r["runs"]) == ["none", "glorot", "batch", "noisy"]
    for runs in r["runs"].values():
        assert len(runs) == 2
        for run in runs:
            assert run["steps"][0] == 0 and run["steps"][-1] == settings["steps"]
            assert all(0 <= a <= 1 for a in run["test_acc"]) and run["final_test_acc"] == run["test_acc"][-1]
            assert np.isclose(run["mean_test_acc"], np.mean(run["test_acc"]))
        q = np.array(runs[0]["unit_percentiles"])  # (T, 3, units): 15th <= median <= 85th
        assert q.shape[:2] == (len(runs[0]["steps"]), 3) and np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])
    # The noise moves the sigmoid inputs' distribution far more than batch norm alone lets it move.
    noisy, batch = r["runs"]["noisy"], r["runs"]["batch"]
    assert all(n["median_travel"] > 3 * b["median_travel"] for n, b in zip(noisy, batch))
    assert all(n["width_ratio"] > 2 * b["width_ratio"] for n, b in zip(noisy, batch))
    for c in r["comparisons"].values():
        iv = c["difference"]
        assert iv["n"] == 2 and c["verdict"].startswith(VERDICTS)
        assert c["predicted"] in ("equal", "positive", "negative")
    assert "within ±2 points" in summary and "Santurkar et al. (2018)" in summary


def test_the_equivalence_rule():
    assert equivalence_verdict(Interval(0.0, -0.01, 0.015, 5), 0.02) == "holds"
    assert equivalence_verdict(Interval(-0.05, -0.06, -0.03, 5), 0.02) == "does not hold"
    assert equivalence_verdict(Interval(0.05, 0.03, 0.07, 5), 0.02) == "does not hold"
    assert equivalence_verdict(Interval(-0.02, -0.03, -0.01, 5), 0.02) == \
        "inconclusive (CI [-3.0, -1.0] straddles ±2)"
    assert equivalence_verdict(Interval(0.0, float("nan"), float("nan"), 1), 0.02).startswith("inconclusive (no")
