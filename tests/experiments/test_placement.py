"""`normlab experiment placement --quick --seeds 2` end to end on real Fashion-MNIST (shrunk by the hidden
--scale): every arm and seed recorded, the arms of a seed paired on one initial draw, verdicts by the rule."""


import numpy as np
import pytest

from normlab.experiments import EXPERIMENTS
from normlab.experiments.placement import ACTIVATIONS, ARMS, HIDDEN
from normlab.models import FullyConnectedNet
from normlab.nn import BatchNorm1d, ReLU

VERDICTS = ("holds", "does not hold", "inconclusive")


@pytest.fixture(scope="module")
def placement_run(quick_outputs):
    return quick_outputs("placement", scale=0.3)


def test_placement_writes_every_arm_seed_and_verdict(placement_run):
    results, summary, d = placement_run
    assert results["experiment"] == "placement" and results["claim"] == EXPERIMENTS["placement"].claim
    assert results["seeds"] == [0, 1] and results["figures"] == ["placement.png"]
    assert (d / "placement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![placement.png](placement.png)" in summary
    r = results["results"]
    assert list(r["runs"]) == list(ACTIVATIONS) == ["relu", "sigmoid"]
    for arms in r["runs"].values():
        assert list(arms) == list(ARMS) == ["none", "before", "after"]
        for runs in arms.values():
            assert len(runs) == 2
            for run in runs:
                assert run["status"] == "completed" and run["final_val_acc"] == run["val_acc"][-1]
                assert run["mean_val_acc"] == pytest.approx(np.mean(run["val_acc"][1:]))
                assert 0.2 < run["final_val_acc"] <= 1.0  # every arm learns something
    assert len(r["comparisons"]) == 2 * 3 * 2  # activations x pairs x measures
    for name, c in r["comparisons"].items():
        act, (a, b) = c["activation"], c["arms"]
        iv = c["difference"]
        paired = [x[c["measure"]] - y[c["measure"]] for x, y in zip(r["runs"][act][a], r["runs"][act][b])]
        assert iv["n"] == 2 and iv["mean"] == pytest.approx(np.mean(paired))
        assert c["verdict"].startswith(VERDICTS)
        if iv["low"] < 0 < iv["high"]:
            assert c["verdict"].startswith("inconclusive (CI [")
        assert name.startswith(f"{act}: {a} - {b}")
    assert "47.4" in summary and "keras-team/keras#1802" in summary and "Verdict rule" in summary
    assert "\n| :--- |" in summary


def test_the_arms_of_a_seed_start_from_one_draw():
    """Placement only reorders layers: with the same generator both networks draw the same weights, in the
    order Linear - BN - ReLU (before) or Linear - ReLU - BN (after)."""
    kinds = {}
    for placement in ("before", "after"):
        net = FullyConnectedNet((1, 28, 28), HIDDEN, 10, normalization="batch", placement=placement,
                                rng=np.random.default_rng(3))
        kinds[placement] = net
    for a, b in zip(kinds["before"].parameters(), kinds["after"].parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert isinstance(kinds["before"][2], BatchNorm1d) and isinstance(kinds["before"][3], ReLU)
    assert isinstance(kinds["after"][2], ReLU) and isinstance(kinds["after"][3], BatchNorm1d)
