"""Shared by the interop tests: the frameworks (imported once per session; skipped with the reason when
missing, an error where NORMLAB_REQUIRE_FRAMEWORKS=1, as in CI), the models compared, and the error
measure."""

import os

import numpy as np
import pytest
from optional import require

from normlab import functional as F
from normlab import nn
from normlab.gradcheck import relative_error

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NORMS = ("batch", "layer", "group")
KINDS = ("mlp", "image", "cnn")  # image: (N, 4, 3, 3) inputs through a 2-D norm and Flatten; cnn: convolutions
CASES = [(kind, norm) for kind in KINDS for norm in NORMS]
BATCH, CLASSES = 10, 3


_framework = require  # a missing framework skips, or fails in CI (NORMLAB_REQUIRE_FRAMEWORKS=1)


def pytest_generate_tests(metafunc):
    """Tests that take `kind` and `norm` run for every model in CASES; those that take one of them, for
    each of its values."""
    wanted = [name for name in ("kind", "norm") if name in metafunc.fixturenames]
    if wanted == ["kind", "norm"]:
        metafunc.parametrize("kind,norm", CASES)
    elif wanted:
        metafunc.parametrize(wanted[0], KINDS if wanted == ["kind"] else NORMS)


@pytest.fixture(scope="session")
def torch():
    return _framework("torch", "torch")


@pytest.fixture(scope="session")
def tf():
    return _framework("tensorflow", "tensorflow")


@pytest.fixture(scope="session")
def keras(tf):
    keras = _framework("keras", "tensorflow")
    assert keras.backend.backend() == "tensorflow", "these tests run Keras on the TensorFlow backend"
    return keras


def _assert_close(ours, theirs, tolerance: float, what: str = "") -> None:
    error = relative_error(ours, theirs)
    assert error <= tolerance, f"{what}: relative error {error:.2e} > {tolerance:.0e}"


def _assert_grads_close(ours: dict, theirs: dict, tolerance: float) -> None:
    """Every gradient by name. A gradient that is zero in exact arithmetic (the bias of a layer before a
    training-mode batch norm) is rounding noise in both: it must be negligible next to the whole
    gradient, in both, rather than agree with the other's noise."""
    assert list(ours) == list(theirs)
    total = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in theirs.values()))
    for name in ours:
        if max(np.linalg.norm(ours[name]), np.linalg.norm(theirs[name])) <= tolerance * total:
            continue
        _assert_close(ours[name], theirs[name], tolerance, name)


def _norm(norm: str, shape: tuple[int, ...], dtype, convention: str) -> nn.Module:
    c = shape[0]
    if norm == "batch":
        cls = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
        return cls(c, convention=convention, dtype=dtype)
    if norm == "layer":
        return nn.LayerNorm(shape, dtype=dtype)
    return nn.GroupNorm(2, c, dtype=dtype)


def randomize(model: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Random weights and running statistics, so a swapped or mis-laid-out array cannot go unnoticed."""
    for _, p in model.named_parameters():
        p.data[...] = rng.standard_normal(p.shape)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b[...] = rng.standard_normal(b.shape)
        elif name.endswith("running_var"):
            b[...] = rng.uniform(0.5, 2.0, b.shape)
        elif name.endswith("num_batches_tracked"):
            b[...] = 7
    return model


def build(kind: str, norm: str, *, dtype=np.float32, convention: str = "pytorch", seed: int = 0):
    """(model, input_shape): a small network with `norm` normalization, random weights and statistics.

    mlp:   Linear(6, 8) - norm - ReLU - Linear(8, 8) - norm - Tanh - Linear(8, 3)
    image: norm over (4, 3, 3) - ReLU - Flatten - Linear(36, 8) - norm - Sigmoid - Linear(8, 3)
    cnn:   (3, 8, 8) inputs: Conv2d(3, 4, 3, padding=1) - norm - ReLU - MaxPool2d(2) - ResidualBlock(4, 6)
           (with a shortcut) - AvgPool2d(2) - ResidualBlock(6, 6) (identity skip) - GlobalAvgPool2d -
           Linear(6, 3); the blocks' norms are BatchNorm2d, GroupNorm(2, 6) or GroupNorm(1, 6)
    """
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        layers = [nn.Linear(6, 8, rng=rng, dtype=dtype), _norm(norm, (8,), dtype, convention), nn.ReLU(),
                  nn.Linear(8, 8, rng=rng, dtype=dtype), _norm(norm, (8,), dtype, convention), nn.Tanh(),
                  nn.Linear(8, CLASSES, rng=rng, dtype=dtype)]
        input_shape = (6,)
    elif kind == "cnn":
        input_shape = (3, 8, 8)
        if norm == "batch" and convention != "pytorch":
            block_norm = lambda block: _with_convention(block, convention)  # noqa: E731
        else:
            block_norm = lambda block: block  # noqa: E731
        # Two groups of three channels (the default, 6 groups of one channel, is instance norm over 4x4 and 2x2 maps,
        # whose float32 gradients are too close to cancellation for the tolerance).
        options = {"groups": 2} if norm == "group" else None
        layers = [nn.Conv2d(3, 4, 3, padding=1, rng=rng, dtype=dtype), _norm(norm, (4, 8, 8), dtype, convention),
                  nn.ReLU(), nn.MaxPool2d(2),
                  block_norm(nn.ResidualBlock(4, 6, normalization=norm, norm_options=options, rng=rng, dtype=dtype)),
                  nn.AvgPool2d(2),
                  block_norm(nn.ResidualBlock(6, 6, normalization=norm, norm_options=options, rng=rng, dtype=dtype)),
                  nn.GlobalAvgPool2d(), nn.Linear(6, CLASSES, rng=rng, dtype=dtype)]
    else:
        input_shape = (4, 3, 3)
        layers = [_norm(norm, input_shape, dtype, convention), nn.ReLU(), nn.Flatten(),
                  nn.Linear(36, 8, rng=rng, dtype=dtype), _norm(norm, (8,), dtype, convention), nn.Sigmoid(),
                  nn.Linear(8, CLASSES, rng=rng, dtype=dtype)]
    return randomize(nn.Sequential(*layers), rng), input_shape


def _with_convention(block: nn.ResidualBlock, convention: str) -> nn.ResidualBlock:
    """The block with its batch norms' running-variance convention set (norm2d builds PyTorch's)."""
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.convention = convention
    return block


def batch(input_shape, seed: int, dtype=np.float32):
    """(x, labels): BATCH samples of `input_shape` (normlab layout) and integer labels."""
    rng = np.random.default_rng(1000 + seed)
    x = (rng.standard_normal((BATCH, *input_shape)) * 2 + 0.5).astype(dtype)
    return x, rng.integers(0, CLASSES, BATCH)


@pytest.fixture
def make_model():
    return build


@pytest.fixture
def make_batch():
    return batch


@pytest.fixture
def assert_close():
    """assert_close(ours, theirs, tolerance, what): norm-wise relative error (`normlab.gradcheck`)."""
    return _assert_close


@pytest.fixture
def assert_grads_close():
    """assert_grads_close(ours, theirs, tolerance): {name: gradient} dicts, names and order equal."""
    return _assert_grads_close



def _normlab_step(model: nn.Module, x: np.ndarray, labels: np.ndarray):
    """Softmax cross-entropy of model on (x, labels), backpropagated: (loss, dx, {name: grad})."""
    model.zero_grad()
    loss, dlogits = F.softmax_cross_entropy(model(x), labels)
    dx = model.backward(dlogits)
    return loss, dx, {name: p.grad for name, p in model.named_parameters()}


@pytest.fixture
def normlab_step():
    return _normlab_step
