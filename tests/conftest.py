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


def write_toy_fashion(d):
    """Fashion-MNIST's four IDX files in d, 400 + 100 examples of a learnable toy problem: class k brightens
    the row band 2k..2k+2."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 400), ("t10k", 100)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        for k in range(10):
            x[y == k, 2 * k:2 * k + 3, :] += 150
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", x.astype(np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    return d


@pytest.fixture(scope="module")
def toy_fashion(tmp_path_factory):
    """The toy Fashion-MNIST of `write_toy_fashion`, once per test module."""
    return write_toy_fashion(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="session")
def toy_fashion_session(tmp_path_factory):
    return write_toy_fashion(tmp_path_factory.mktemp("fashion-session"))


@pytest.fixture(scope="session")
def trained_run(toy_fashion_session, tmp_path_factory):
    """A run directory of a tiny fcnet (hidden 32, batch norm) trained 2 epochs on the toy Fashion-MNIST,
    trained once per session and shared by the tests that use a trained model (evaluate, predict,
    export, load_run). Tests must not change it."""
    from normlab.train.config import TrainConfig
    from normlab.train.run import run_training

    run_dir = tmp_path_factory.mktemp("trained-run") / "run"
    config = TrainConfig(model_options={"hidden_dims": (32,)}, epochs=2, batch_size=32)
    result = run_training(config, run_dir, data_dir=toy_fashion_session, download=False, progress=False,
                          log=lambda line: None)
    assert result.status == "completed" and result.test_acc > 0.8
    return run_dir
