"""The experiments' quick runs: `normlab experiment NAME --quick --seeds 2`, shrunk further by the hidden
--scale, on the real Fashion-MNIST, run once per test module and (NAME, --model, --scale)."""

import json

import pytest
from optional import require_fashion_mnist

from normlab.cli import main


@pytest.fixture(scope="module")
def quick_outputs(tmp_path_factory):
    """A function (name, model=None, scale=0.3) -> (results.json as a dict, summary.md, its directory) that
    runs the experiment on first use, its runs in two worker processes on the NumPy backend."""
    require_fashion_mnist()
    out = tmp_path_factory.mktemp("experiments")
    done = {}

    def get(name: str, model: str | None = None, scale: float = 0.3):
        track = name if model is None else f"{name}-cnn"
        if (track, scale) not in done:
            d = out / f"scale-{scale:g}"
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("NORMLAB_BACKEND", "numpy")  # no compilation in each worker
                assert main(["experiment", name, "--quick", "--seeds", "2", "--jobs", "2", "--scale", str(scale),
                             "--no-download", "--out", str(d), *(["--model", model] if model else [])]) == 0
            done[track, scale] = (json.loads((d / track / "results.json").read_text()),
                                  (d / track / "summary.md").read_text(), d / track)
        return done[track, scale]

    return get
