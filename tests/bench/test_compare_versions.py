"""benchmarks/compare_versions.py: each checkout's code runs as itself, side by side in one process."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def compare_versions():
    spec = importlib.util.spec_from_file_location("compare_versions", ROOT / "benchmarks" / "compare_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = {m: sys.modules[m] for m in list(sys.modules) if m == "normlab" or m.startswith("normlab.")}
    yield module
    for name in [m for m in sys.modules if m == "normlab" or m.startswith("normlab.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_each_version_imports_its_own_files(compare_versions, tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))
    ours, theirs = compare_versions.Version(str(ROOT / "src")), compare_versions.Version(str(copy))
    for version, folder in ((ours, ROOT / "src"), (theirs, copy), (ours, ROOT / "src")):
        version.use()
        normalize = importlib.import_module("normlab.functional.normalize")  # as a lazy import finds it
        assert Path(normalize.__file__).is_relative_to(folder)


def test_a_folder_without_normlab_is_refused(compare_versions, tmp_path):
    with pytest.raises((SystemExit, ImportError)):
        compare_versions.Version(str(tmp_path))


def test_prints_a_ratio_per_case(compare_versions, capsys):
    compare_versions.main([str(ROOT / "src"), str(ROOT / "src"), "--quick", "--reps", "2"])
    out = capsys.readouterr().out
    for case in compare_versions.CASES:
        line = next(line for line in out.splitlines() if line.startswith(case))
        assert len(line[len(case):].split()) == 4  # two medians, the ratio and the p10 ratio
