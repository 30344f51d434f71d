"""The README works as written: every ```python block runs unchanged, each in a fresh namespace (a block
must be complete on its own: its imports included), and the README's cheap shell commands run in a smoke
test. Every command of its ```bash blocks is either run here or listed in TOO_EXPENSIVE with the reason."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)
BASH_BLOCKS = re.findall(r"^```bash\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# The frameworks a block needs, by the names it uses (skipped where missing, an error where CI requires them).
FRAMEWORK_USES = {"to_torch": ("torch", "torch"), "from_torch": ("torch", "torch"),
                  "to_keras": ("tensorflow", "tensorflow")}


def _framework(module: str, extra: str) -> None:
    if os.environ.get("NORMLAB_REQUIRE_FRAMEWORKS") == "1":
        __import__(module)  # CI: a missing framework fails instead of skipping
    else:
        pytest.importorskip(module, reason=f"{module} is not installed: pip install 'normlab[{extra}]'")


def test_the_readme_has_python_blocks_to_test():
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"block{i + 1}" for i in range(len(PYTHON_BLOCKS))])
def test_readme_python_block_runs_as_written(block, tmp_path, monkeypatch):
    for name, (module, extra) in FRAMEWORK_USES.items():
        if name in block:
            _framework(module, extra)
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands here
    exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102 - the point of the test


def _commands() -> list[str]:
    """The command lines of the README's bash blocks, without their comments."""
    lines = (line.split("  #")[0].strip() for block in BASH_BLOCKS for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# Run here as written (with this checkout's normlab), with what the output must show.
CHEAP = {
    "normlab gradcheck": "PASS: largest relative error",
    "normlab --help": "usage: normlab",
    "normlab train --limit 5000 --epochs 1 --out runs/quick": "run saved in runs/quick, plot runs/quick/curves.png",
    # on a stand-in for runs/ln-sgd (one epoch on 2,000 images) and two test images as shoe.png and x.npy
    "normlab evaluate runs/ln-sgd": "confusion matrix in runs/ln-sgd/confusion.png",
    "normlab predict runs/ln-sgd shoe.png x.npy --top 3": "shoe.png: Ankle boot",
}
# Named in the README's text (inline), cheap, and run here too.
INLINE = {
    "normlab explain batchnorm": "Forward, node by node:",
    "normlab graph batchnorm --out bn.svg": "bn.svg",
}
TOO_EXPENSIVE = {
    'pip install -e ".[all]" && normlab train': "installs every extra (minutes, downloads); `normlab train` is "
                                                "the full 5-epoch run, about 40 s, timed by hand for the README",
    "python3 -m pytest -q": "the test suite itself",
    "normlab train --normalization layer --optimizer sgd --lr 0.05 --epochs 10 --out runs/ln-sgd":
        "10 epochs of the full training set (over a minute); tests/cli covers every option on small data",
    "normlab train --resume runs/ln-sgd": "needs the run above; resume is tested bit for bit in tests/cli",
    "normlab train --dataset cifar10 --augment": "downloads CIFAR-10 (170 MB); tests/data reads its format",
    "normlab train --model bn-cnn --framework torch": "minutes of CNN training; tests/train/test_frameworks.py "
                                                      "trains the twins on small data",
    "normlab experiment batch-size --quick --jobs 2": "a minute or two; tests/experiments runs every experiment "
                                                      "smaller, with --jobs 2",
    "normlab experiment all --jobs 2": "about 40 minutes on two cores (docs/results.md)",
    "normlab export runs/ln-sgd --format onnx": "15 s (torch.onnx's exporter, then onnxruntime); "
                                                "tests/cli/test_use_a_run_cli.py exports every format",
}


def test_every_readme_command_is_run_here_or_said_too_expensive():
    commands = _commands()
    assert commands, "no ```bash blocks found in README.md"
    unclassified = [c for c in commands if c not in CHEAP and c not in TOO_EXPENSIVE]
    assert not unclassified, f"README commands neither run by this test nor listed as too expensive: {unclassified}"
    for command in INLINE:
        assert f"`{command}`" in README or command in README.replace("\n  ", " ")


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """`normlab ...` as `python -m normlab ...` of this checkout (the installed entry point may be
    another checkout's; tests/test_wheel.py tests the entry point itself)."""
    args = command.split()
    assert args[0] == "normlab"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "normlab", *args[1:]], cwd=cwd, env=env, capture_output=True,
                          check=False, text=True, timeout=300)


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory) -> Path:
    """A directory holding runs/ln-sgd (a one-epoch run on 2,000 images in place of the README's 10 epochs),
    shoe.png (the first test image, an ankle boot) and x.npy (the next two, uint8)."""
    import numpy as np
    from matplotlib.image import imsave

    from normlab.data import load_dataset

    where = tmp_path_factory.mktemp("readme")
    result = _run("normlab train --limit 2000 --epochs 1 --out runs/ln-sgd --no-progress", where)
    assert result.returncode == 0, result.stderr
    test = load_dataset("fashion-mnist", FASHION_MNIST, download=False)
    imsave(where / "shoe.png", test.x_test[0, 0], cmap="gray", vmin=0, vmax=255)
    np.save(where / "x.npy", test.x_test[1:3])
    return where


@pytest.mark.parametrize("command", [*CHEAP, *INLINE])
def test_readme_shell_command_runs(command, tmp_path, request):
    if ("train" in command or "runs/" in command) and not FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST is not in {FASHION_MNIST} (apt-get install dataset-fashion-mnist); "
                    "the test does not download")
    if command.startswith("normlab graph") and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    if "runs/ln-sgd" in command:
        tmp_path = request.getfixturevalue("stand_in_run")
    result = _run(command, tmp_path)
    assert result.returncode == 0, f"{command}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert (CHEAP | INLINE)[command] in result.stdout
    if command.startswith("normlab train"):
        last = result.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"test accuracy 0\.\d{4} \(weights of epoch 1, val acc 0\.\d{4}\) in \d+\.\d s; "
                            r"run saved in runs/quick, plot runs/quick/curves\.png", last)
        assert float(last.split()[2]) > 0.75  # 4,500 images, one epoch: about 0.8
        assert (tmp_path / "runs/quick/curves.png").is_file()
    if command.startswith("normlab predict"):
        assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["shoe.png", "x.npy[0]", "x.npy[1]"]
    if command.startswith("normlab graph"):
        assert (tmp_path / "bn.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
