"""The package as a user receives it: `python -m build` makes a wheel that installs into a fresh virtual
environment, and its `normlab` command trains.

Kept well under a minute (about 10 s on 2 cores): the wheel is built without build isolation (from the
setuptools already installed, so nothing is downloaded); the environment sees the system's packages
(numpy, matplotlib, ... need no download) and the wheel goes in with --no-deps; the run is a tiny one
(600 images, one epoch) on the NumPy backend, so the wheel's fresh copy of the numba kernels is not
compiled (that is tested in tests/kernels). The command runs from the environment's bin/ with no
PYTHONPATH, so it can only find the installed copy.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _run(args, **options) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, **options)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="pip install build (in the test extra)")
    source = tmp_path_factory.mktemp("source")  # a copy: building writes build/ and *.egg-info beside the code
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)])
    (built,) = dist.glob("normlab-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    # every file of the package (page.js and page.css too), not only modules
    modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "normlab").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    assert "normlab = normlab.cli:main" in entry_points


def test_the_wheel_installs_into_a_fresh_environment_and_trains(wheel, tmp_path):
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST is not in {FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / Path(sys.executable).name
    # pip from the system's packages, installing into the environment it runs in
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NORMLAB_BACKEND"] = "numpy"
    where = _run([python, "-c", "import normlab; print(normlab.__file__)"], env=env, cwd=tmp_path).stdout.strip()
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    assert Path(where).resolve().is_relative_to(site.resolve())  # the wheel's copy, not a checkout's
    result = _run([bin_dir / "normlab", "train", "--limit", "600", "--epochs", "1", "--out", "run", "--no-progress",
                   "--no-download"], env=env, cwd=tmp_path)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy ") and last.endswith("run saved in run, plot run/curves.png")
    assert float(last.split()[2]) > 0.3  # 540 images, one epoch: well above chance (0.1)
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"config.json", "history.json", "curves.png",
                                                              "model.safetensors", "checkpoint.safetensors"}
