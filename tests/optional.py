"""Optional dependencies in tests (a framework, the real Fashion-MNIST): a test that needs one skips where it is
missing, except in CI (NORMLAB_REQUIRE_FRAMEWORKS=1, which `.ci/run` sets after installing every extra and the
dataset-fashion-mnist package), where a missing or broken one fails the test instead of skipping it."""

from __future__ import annotations

import importlib
import os

import pytest


def require(name: str, extra: str):
    """Import module `name` (from the extra `extra`), or skip the test; in CI, fail."""
    if os.environ.get("NORMLAB_REQUIRE_FRAMEWORKS") == "1":
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed: pip install 'normlab[{extra}]' "
                                            "(CI installs it and sets NORMLAB_REQUIRE_FRAMEWORKS=1)")


def require_fashion_mnist() -> None:
    """The real Fashion-MNIST must be installed, or the test skips; in CI, fails."""
    from normlab.data import DatasetNotFoundError, load_dataset

    try:
        load_dataset("fashion-mnist", download=False)
    except DatasetNotFoundError:
        if os.environ.get("NORMLAB_REQUIRE_FRAMEWORKS") == "1":
            raise
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
