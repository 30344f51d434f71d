import numpy as np
import pytest

from normlab.data.idx import write_idx


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def numpy_backend(monkeypatch):
    """Force the NumPy path for tests that compare two layers bit for bit (e.g. batch renorm with rmax=1,
    dmax=0 against batch norm): the compiled twin is equal to rounding, not to the bit, and is held to the
    NumPy path in tests/kernels."""
    monkeypatch.setenv("NORMLAB_BACKEND", "numpy")


@pytest.fixture(scope="module")
def toy_fashion(tmp_path_factory):
    """Fashion-MNIST's four IDX files, 400 + 100 examples of a learnable toy problem: class k brightens the
    row band 2k..2k+2."""
    d = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 400), ("t10k", 100)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        for k in range(10):
            x[y == k, 2 * k:2 * k + 3, :] += 150
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", x.astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    return d
