"""`normlab experiment loss-landscape --quick --seeds 2`, shrunk by the hidden --scale, on real Fashion-MNIST:
the files, the bands at every measured point, every seed's values, the verdicts by the shared rule."""


import numpy as np
import pytest

from normlab.experiments import EXPERIMENTS


@pytest.fixture(scope="module")
def result(quick_outputs):
    return quick_outputs("loss-landscape", scale=0.25)


def test_loss_landscape_quick_run(result):
    results, summary, d = result
    assert results["experiment"] == "loss-landscape" and results["claim"] == EXPERIMENTS["loss-landscape"].claim
    assert results["seeds"] == [0, 1] and results["figures"] == ["loss_landscape.png"]
    assert (d / "loss_landscape.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![loss_landscape.png](loss_landscape.png)" in summary and "Verdict rule" in summary
    settings, r = results["settings"], results["results"]
    np.testing.assert_allclose(settings["step_sizes"], np.linspace(0.05, 0.4, 8))
    assert list(r["runs"]) == ["none", "batch"]
    for runs in r["runs"].values():
        assert len(runs) == 2
        for run in runs:
            assert run["status"] == "completed" and run["steps"][0] == 0 and run["steps"][-1] == settings["steps"]
            lo, hi = np.array(run["loss_min"]), np.array(run["loss_max"])
            assert np.all(lo <= hi) and np.allclose(run["loss_range"], hi - lo)
            assert np.all(np.array(run["gradient_change_min"]) <= run["gradient_change_max"])
            # effective beta >= the largest change over the largest distance (it is a maximum over the steps)
            bound = np.array(run["gradient_change_max"]) / (0.4 * np.array(run["gradient_norm"]))
            assert np.all(np.array(run["effective_beta"]) >= bound * (1 - 1e-12))
            assert np.isclose(run["mean_effective_beta"], np.mean(run["effective_beta"][1:]))
    # At step 0 both arms start from the same weights; the batch-normalized one already sees a smoother
    # landscape (its gradient changes less along the step), as the paper's Fig. 4 shows throughout training.
    for none, batch in zip(r["runs"]["none"], r["runs"]["batch"]):
        assert batch["gradient_change_max"][0] < none["gradient_change_max"][0]
    for c in r["comparisons"].values():
        assert c["log10_ratio"]["n"] == 2 and c["predicted"] == "negative"
        assert c["verdict"].startswith(("holds", "does not hold", "inconclusive"))
    assert "Santurkar et al. (2018), Figure 4" in summary and "0.5-4 x the learning rate" in summary
