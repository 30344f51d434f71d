"""large-batch: `normlab experiment large-batch --quick --seeds 2` (shrunk by --scale) trains every arm from the
same weights for the same epochs and writes every seed's values, intervals, verdicts by the rule and its plot."""

import math

import pytest

from normlab.experiments import EXPERIMENTS

VERDICTS = ("holds", "does not hold", "inconclusive")


@pytest.fixture(scope="module")
def quick_run(quick_outputs):
    return quick_outputs("large-batch", scale=0.3)


def test_quick_run_writes_every_seed_intervals_verdicts_and_plot(quick_run):
    results, summary, d = quick_run
    assert results["experiment"] == "large-batch" and results["claim"] == EXPERIMENTS["large-batch"].claim
    assert results["seeds"] == results["results"]["seeds"] == [0, 1]
    assert results["figures"] == ["large_batch.png"]
    assert (d / "large_batch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![large_batch.png]" in summary
    settings, r = results["settings"], results["results"]
    assert list(r["runs"]) == ["small", "large", "ghost-32", "ghost-128"]
    assert settings["arms"]["ghost-32"] == {"batch_size": 512, "normalization": "ghost", "virtual_batch_size": 32}
    large, small = settings["arms"]["large"]["batch_size"], settings["arms"]["small"]["batch_size"]
    assert settings["lr"]["large"] == pytest.approx(settings["lr"]["small"] * math.sqrt(large / small))
    for seeds in r["runs"].values():
        assert len(seeds) == 2
        for run in seeds:
            assert len(run["val_error"]) == len(run["train_error"]) == settings["epochs"]
            assert run["final_val_error"] == run["val_error"][-1]
    for arm, spec in settings["arms"].items():  # the same epochs: far fewer updates with the large batch
        n_train = settings["n_train"] - (settings["n_train"] % spec["batch_size"] == 1)
        assert r["table"][arm]["steps"] == settings["epochs"] * math.ceil(n_train / spec["batch_size"])
    for c in r["comparisons"].values():
        assert c["verdict"].startswith(VERDICTS) and c["difference"]["n"] == 2
        iv = c["difference"]
        if iv["low"] is not None and iv["low"] < 0 < iv["high"]:
            assert c["verdict"].startswith("inconclusive (CI [")
    assert "Hoffer et al. 2017" in summary and "Verdict rule (the same for every claim)" in summary
