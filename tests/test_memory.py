"""Recycled output arrays: memory comes back only from arrays nothing refers to any more."""

import subprocess
import sys

import numpy as np
import pytest

from normlab import memory


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.delenv(memory.ENV_VAR, raising=False)
    memory.release()
    yield
    memory.release()


SHAPE = (512, 1024)  # 2 MiB of float32: above MIN_BYTES


def test_a_dead_output_is_recycled_and_a_live_one_never():
    first = memory.empty(SHAPE, np.float32)
    first[...] = 7.0
    second = memory.empty(SHAPE, np.float32)  # first is alive: new memory
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, 7.0)
    address = first.__array_interface__["data"][0]
    del first
    third = memory.empty(SHAPE, np.float32)
    assert third.__array_interface__["data"][0] == address
    assert memory.held_bytes() == 2 * 2**21


def test_a_view_keeps_its_buffer_in_use():
    out = memory.empty(SHAPE, np.float64)
    column = out[:, 3]
    column[...] = 1.0
    del out
    fresh = memory.empty(SHAPE, np.float64)
    fresh[...] = 0.0
    assert not np.shares_memory(fresh, column)
    np.testing.assert_array_equal(column, 1.0)


def test_shapes_and_dtypes_share_buffers_of_one_rounded_size():
    a = memory.empty((1000, 600), np.float32)  # 2.4 MB -> a 4 MiB buffer
    address = a.__array_interface__["data"][0]
    del a
    b = memory.empty((300, 1000), np.float64)  # 2.4 MB too
    assert b.shape == (300, 1000) and b.dtype == np.float64 and b.flags.c_contiguous
    assert b.__array_interface__["data"][0] == address


def test_small_arrays_bypass_the_pool():
    small = memory.empty((10, 10), np.float32)
    assert small.shape == (10, 10) and memory.held_bytes() == 0


def test_the_limit_releases_idle_buffers_first_and_then_falls_back(monkeypatch):
    monkeypatch.setenv(memory.ENV_VAR, str(2 * 2**21))
    a = memory.empty(SHAPE, np.float32)
    b = memory.empty(SHAPE, np.float32)
    c = memory.empty(SHAPE, np.float32)  # the pool is full of live buffers: plain NumPy memory
    assert memory.held_bytes() == 2 * 2**21
    assert not np.shares_memory(c, a) and not np.shares_memory(c, b)
    del a, b
    d = memory.empty((1024, 1024), np.float32)  # 4 MiB: both idle 2 MiB buffers go to make room
    assert memory.held_bytes() == 2 * 2**21 and d.nbytes == 2 * 2**21


def test_zero_turns_recycling_off_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv(memory.ENV_VAR, "0")
    memory.empty(SHAPE, np.float32)
    assert memory.held_bytes() == 0
    monkeypatch.setenv(memory.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="NORMLAB_RECYCLE_BYTES must be a whole number of bytes, got 'lots'"):
        memory.empty(SHAPE, np.float32)
    monkeypatch.setenv(memory.ENV_VAR, "-1")
    with pytest.raises(ValueError, match="NORMLAB_RECYCLE_BYTES must be >= 0, got '-1'"):
        memory.empty(SHAPE, np.float32)


def test_layers_never_overwrite_an_output_someone_holds():
    """Held outputs of the layers that recycle (convolution, compiled batch norm) survive later calls."""
    from normlab import functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 16, 32, 32), dtype=np.float32)  # 1 MiB: recycled
    weight = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    gamma, beta = np.ones(16, np.float32), np.zeros(16, np.float32)
    held = [F.conv2d_forward(x, weight, None, 1, 1)[0], F.batchnorm_forward(x, gamma, beta)[0]]
    assert all(a.base is not None for a in held)  # both outputs came from the pool
    copies = [a.copy() for a in held]
    for _ in range(3):
        F.conv2d_forward(-x, weight, None, 1, 1)
        F.batchnorm_forward(-x, gamma, beta)
    for a, b in zip(held, copies):
        np.testing.assert_array_equal(a, b)


def test_zeros_come_zeroed_from_a_dirty_recycled_buffer():
    dirty = memory.empty(SHAPE, np.float32)
    dirty[...] = np.nan
    address = dirty.__array_interface__["data"][0]
    del dirty
    zeros = memory.zeros(SHAPE, np.float32)
    assert zeros.__array_interface__["data"][0] == address  # the same memory, handed out again
    assert zeros.dtype == np.float32 and zeros.shape == SHAPE
    np.testing.assert_array_equal(zeros, 0.0)


def test_arrays_start_on_a_cache_line_and_the_latest_idle_buffer_is_reused_first():
    arrays = [memory.empty(SHAPE, np.float32) for _ in range(3)]
    assert all(a.ctypes.data % memory.ALIGN == 0 for a in arrays)
    assert all(memory.empty(shape, np.float64).ctypes.data % memory.ALIGN == 0 for shape in [(300, 1001), (3, 1 << 18)])
    addresses = [a.ctypes.data for a in arrays]
    del arrays[2], arrays[0]  # two idle buffers: the third handed out most recently
    assert memory.empty(SHAPE, np.float32).ctypes.data == addresses[2]


_STEADY_FAULTS_PROBE = """
import resource
import numpy as np
from normlab import functional as F
rng = np.random.default_rng(0)
x = rng.standard_normal((2048, 768), dtype=np.float32)
dout = rng.standard_normal(x.shape, dtype=np.float32)
gamma, beta = np.ones(768, np.float32), np.zeros(768, np.float32)
def step():
    out, cache = F.layernorm_forward(x, gamma, beta, backend="numba")
    return F.layernorm_backward(dout, cache)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_layer_in_steady_state_touches_no_fresh_pages():
    """In a process of normlab alone (no torch whose large frees raise glibc's mmap and trim thresholds), a
    layer norm forward + backward must reuse memory: with its two 393 KB partial sums allocated inside the
    kernel (numba's allocator, malloc), the backward page-faulted ~234 times per pass."""
    pytest.importorskip("numba")
    run = subprocess.run([sys.executable, "-c", _STEADY_FAULTS_PROBE], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr
    faults = int(run.stdout.strip().splitlines()[-1])
    assert faults < 5 * 20, f"{faults} minor page faults in 5 steady forward + backward passes"
