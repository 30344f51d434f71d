import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def numpy_backend(monkeypatch):
    """Force the NumPy path for tests that compare two layers bit for bit (e.g. batch renorm with rmax=1,
    dmax=0 against batch norm): the compiled twin is equal to rounding, not to the bit, and is held to the
    NumPy path in tests/kernels."""
    monkeypatch.setenv("NORMLAB_BACKEND", "numpy")
