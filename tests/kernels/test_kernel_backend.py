"""Choosing the backend: the argument, then NORMLAB_BACKEND, then whether numba imports; and the
compiled kernels cached on disk, so a second process does not compile them again."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from normlab import functional as F
from normlab.kernels import backend


def test_auto_follows_the_environment_variable(monkeypatch):
    monkeypatch.setenv("NORMLAB_BACKEND", "numpy")
    assert backend.resolve_backend("auto") == "numpy"
    _, cache = F.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3))
    assert cache.compiled is None


def test_an_explicit_argument_beats_the_environment_variable(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setenv("NORMLAB_BACKEND", "numpy")
    assert backend.resolve_backend("numba") == "numba"
    monkeypatch.setenv("NORMLAB_BACKEND", "numba")
    assert backend.resolve_backend("numpy") == "numpy"


def test_auto_picks_numba_when_it_imports_and_numpy_otherwise(monkeypatch):
    monkeypatch.delenv("NORMLAB_BACKEND", raising=False)
    monkeypatch.setattr(backend, "numba_available", lambda: False)
    assert backend.resolve_backend() == "numpy"
    with pytest.raises(ImportError, match=r"normlab\[fast\]"):
        backend.resolve_backend("numba")
    monkeypatch.setattr(backend, "numba_available", lambda: True)
    assert backend.resolve_backend() == "numba"


def test_unknown_backends_are_named_in_the_error(monkeypatch):
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'cuda'"):
        F.batchnorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), backend="cuda")
    monkeypatch.setenv("NORMLAB_BACKEND", "fortran")
    with pytest.raises(ValueError, match=r"NORMLAB_BACKEND must be one of .* got 'fortran'"):
        backend.resolve_backend()


def test_a_second_process_loads_the_compiled_kernels_from_the_disk_cache():
    pytest.importorskip("numba")
    script = """
import json, numpy as np
from normlab import functional as F
from normlab.kernels.normalize import channels, columns
x = np.random.default_rng(0).standard_normal((4, 3, 5))  # small planes: blocks of images, columns
_, cache = F.batchnorm_forward(x, np.ones(3), np.zeros(3), backend="numba")
F.batchnorm_backward(x, cache)
print(json.dumps({f.__name__: [f.stats.cache_hits.total(), f.stats.cache_misses.total()]
                  for f in (channels.image_block_moments, columns.normalize_columns, channels.image_block_grad_sums,
                            columns.input_grad_columns)}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    del first  # it compiled (or loaded) the kernels and left them in the cache
    stats = json.loads(second.stdout.strip().splitlines()[-1])
    for name, (hits, misses) in stats.items():
        assert hits >= 1 and misses == 0, f"{name} compiled again: {hits} cache hits, {misses} misses"


def test_auto_compiles_only_inputs_large_enough_to_repay_a_call(monkeypatch):
    numba = pytest.importorskip("numba")
    monkeypatch.delenv("NORMLAB_BACKEND", raising=False)
    assert backend.numba_available()
    threshold = backend.auto_min_elements()
    assert threshold == (backend.AUTO_MIN_ELEMENTS if numba.config.THREADING_LAYER == "tbb"
                         else backend.AUTO_MIN_ELEMENTS_SLEEPING)
    small = np.ones((4, threshold // 4 - 1), np.float32)
    large = np.random.default_rng(0).standard_normal((4, threshold // 4)).astype(np.float32)
    assert F.batchnorm_forward(small, np.ones(small.shape[1], np.float32), np.zeros(small.shape[1], np.float32)
                               )[1].compiled is None
    assert F.batchnorm_forward(large, np.ones(large.shape[1], np.float32), np.zeros(large.shape[1], np.float32)
                               )[1].compiled is not None
    # An explicit choice, by argument or environment, holds at any size.
    assert F.layernorm_forward(small, np.ones(small.shape[1]), np.zeros(small.shape[1]), backend="numba"
                               )[1].compiled is not None
    monkeypatch.setenv("NORMLAB_BACKEND", "numba")
    assert backend.resolve_backend("auto", size=1) == "numba"


_LAYER_PROBE = """
import json, os, numpy as np
from normlab.kernels import backend, numba_available
assert numba_available()
import numba
from normlab import functional as F
x = np.random.default_rng(0).standard_normal((64, 16))
F.layernorm_forward(x, np.ones(16), np.zeros(16), backend="numba")
layer = numba.threading_layer()
child = None
if hasattr(os, "fork"):  # a forked child runs a parallel kernel too, on threads of its own
    pid = os.fork()
    if pid == 0:
        F.layernorm_backward(x, F.layernorm_forward(x, np.ones(16), np.zeros(16), backend="numba")[1])
        os._exit(0)
    child = os.waitpid(pid, 0)[1]
print(json.dumps({"layer": layer, "tbb": backend.tbb_layer_available(), "child": child}))
"""


@pytest.mark.parametrize("forced", [None, "workqueue"])
def test_the_threading_layer_is_tbb_where_it_loads_unless_the_environment_says_otherwise(forced):
    """TBB where its library loads (the `fast` extra installs it on x86-64), else the workqueue; an explicit
    NUMBA_THREADING_LAYER wins. Checked in fresh processes: the layer is fixed once numba's threads start."""
    pytest.importorskip("numba")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if forced:
        env["NUMBA_THREADING_LAYER"] = forced
    run = subprocess.run([sys.executable, "-c", _LAYER_PROBE], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    expected = forced or ("tbb" if seen["tbb"] else "workqueue")
    assert seen["layer"] == expected
    assert seen["child"] in (None, 0)


_COPY_ONCE = """
import numpy as np
from normlab.kernels.backend import numba_available
assert numba_available()
from normlab.kernels.copy_numba import parallel_copy
dst = np.empty(10)
parallel_copy(dst, np.ones(10))
parallel_copy(dst, np.ones(10))  # the same signature again: no second compilation, no second line
"""


def test_a_kernel_that_misses_the_disk_cache_says_it_is_compiling_once_and_a_cached_one_says_nothing(tmp_path):
    pytest.importorskip("numba")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "..", "src"), os.environ.get("PYTHONPATH", "")])}
    cold, warm = (subprocess.run([sys.executable, "-c", _COPY_ONCE], env=env, capture_output=True, text=True,
                                 check=True, timeout=120) for _ in range(2))
    assert cold.stderr.count(backend.COMPILE_NOTICE) == 1
    assert backend.COMPILE_NOTICE.startswith("compiling normlab's kernels (first run only: about 15 s")
    assert backend.COMPILE_NOTICE not in warm.stderr


def test_the_compile_notice_can_be_silenced(tmp_path):
    pytest.importorskip("numba")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "..", "src"), os.environ.get("PYTHONPATH", "")])}
    silenced = "from normlab.kernels.backend import set_compile_notice\nset_compile_notice(None)\n" + _COPY_ONCE
    result = subprocess.run([sys.executable, "-c", silenced], env=env, capture_output=True, text=True, check=True,
                            timeout=120)
    assert backend.COMPILE_NOTICE not in result.stderr


def test_the_dispatch_point_compiles_only_float32_and_float64_and_checks_the_name_whatever_the_dtype(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.delenv("NORMLAB_BACKEND", raising=False)
    half, single = np.ones(8, np.float16), np.ones(8, np.float32)
    assert backend.compiled_twin("normalize", "numba", half) is None
    assert backend.compiled_twin("normalize", "numba", single).__name__ == "normlab.kernels.normalize"
    assert backend.compiled_twin("pool", "numba", single).__name__ == "normlab.kernels.pool_numba"
    assert backend.compiled_twin("pool", "numpy", single) is None
    with pytest.raises(ValueError, match="backend must be one of .* got 'cuda'"):
        backend.compiled_twin("pool", "cuda", half)
    # "auto": the normalization by size, the other families at any size
    assert backend.compiled_twin("normalize", "auto", single) is None
    assert backend.compiled_twin("conv", "auto", single) is not None


def test_functional_reaches_compiled_kernels_only_through_the_dispatch_point():
    """No functional module imports a compiled kernel module: they ask `kernels.backend` for it."""
    import ast
    import pathlib

    import normlab.functional

    for path in pathlib.Path(normlab.functional.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) else
                       [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            for module in modules:
                if module and module.startswith("normlab.kernels"):
                    assert module in ("normlab.kernels.backend", "normlab.kernels.statistics"), (path.name, module)
