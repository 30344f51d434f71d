"""Which implementation runs: NumPy, or a compiled numba twin. `compiled_twin` is the one dispatch point.

The choice, strongest first:

1. the `backend=` argument of a forward function, when it is "numpy" or "numba";
2. the environment variable NORMLAB_BACKEND ("auto", "numpy" or "numba"), read on every call;
3. "auto": numba when it imports (`pip install normlab[fast]`) and, for the normalization kernels, the
   input has at least `auto_min_elements()` elements (2^16 on numba's TBB layer, 2^17 otherwise). Below
   that size a compiled call's fixed cost (its parallel regions and their threads' wake-up) exceeds what
   NumPy needs for the whole layer (docs/performance.md has the measurements).

Asking for "numba" where numba does not import is an error, never a silent fallback; an unknown name is
an error whatever the input. Only float32 and float64 are compiled: other dtypes run NumPy. Nothing
imports numba until a forward pass needs the choice, so `import normlab` stays fast.

The kernels are compiled on first use and cached on disk. When a kernel misses that cache (the first run
after installing or changing normlab), one line on stderr says so before the pause, instead of a progress
bar sitting at 0 (`set_compile_notice`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from functools import cache
from types import ModuleType

import numpy as np

BACKENDS = ("auto", "numpy", "numba")
ENV_VAR = "NORMLAB_BACKEND"
COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what numba compiles
AUTO_MIN_ELEMENTS = 1 << 16  # "auto" compiles a normalization from this size on numba's TBB layer,
AUTO_MIN_ELEMENTS_SLEEPING = 1 << 17  # and from this size on any other layer, whose threads sleep

# The compiled twin of each family of functional operations (modules of normlab.kernels).
TWINS = {
    "normalize": "normalize",  # the normalization core, behind one interface for every layout
    "conv": "im2col_numba",  # the copies around a convolution's matrix products
    "winograd": "winograd_numba",  # the Winograd tile transforms
    "pixels": "pixels_numba",  # channels-last copies
    "pool": "pool_numba",  # max and average pooling
}
# Families "auto" compiles at any size: they run one chunk per thread, with no parallel region to start.
ANY_SIZE = frozenset({"conv", "winograd", "pixels", "pool"})


@cache
def numba_available() -> bool:
    """True when numba imports (the first call imports it: about half a second). Also chooses numba's
    threading layer (`choose_threading_layer`), so that whatever starts numba's threads first, a kernel or
    a `numba.set_num_threads`, gets the layer normlab measured for."""
    try:
        import numba
    except Exception:  # noqa: BLE001 - not installed, or broken against this NumPy: not usable
        return False
    choose_threading_layer(numba)
    _listen_for_compilation()
    return True


# The first compilation's length is in docs/performance.md.
COMPILE_NOTICE = "compiling normlab's kernels (first run only: about 15 s, up to a minute for a CNN)..."


def _print_notice(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)  # above a progress bar, if one is showing


_notice: Callable[[str], None] | None = _print_notice


def set_compile_notice(notice: Callable[[str], None] | None) -> None:
    """Who is told, once per process, that a kernel missed the on-disk cache and is being compiled:
    notice(COMPILE_NOTICE). Default: a line on stderr. None: nobody (the ranks other than 0 of an MPI
    run)."""
    global _notice
    _notice = notice


def _listen_for_compilation() -> None:
    """Call the notice on the first compilation of a normlab kernel. numba raises its "numba:compile"
    event only on a cache miss (a kernel loaded from the disk cache does not), just before compiling."""
    from numba.core import event

    class FirstCompilation(event.Listener):
        told = False  # stays registered (unregistering inside numba's loop over listeners would skip one)

        def on_start(self, ev) -> None:
            function = getattr(ev.data.get("dispatcher"), "py_func", None)
            if not self.told and getattr(function, "__module__", "").startswith("normlab.") and _notice:
                self.told = True
                _notice(COMPILE_NOTICE)

        def on_end(self, ev) -> None:
            pass

    event.register("numba:compile", FirstCompilation())


def choose_threading_layer(numba: ModuleType) -> None:
    """Unless NUMBA_THREADING_LAYER says otherwise, ask numba for its "tbb" layer where the `tbb` package
    is installed (the `fast` extra brings it on x86-64), else for "workqueue".

    Why: TBB's workers wake within microseconds and spin only briefly; the workqueue's threads always
    sleep, so every parallel region pays to wake them; OpenMP's workers spin and take a core from the
    convolutions' BLAS threads (docs/performance.md, "Threading layer", has the measurements). The choice
    is process-wide and only takes effect if nothing has started numba's threads yet."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "tbb" if tbb_layer_available() else "workqueue"


def tbb_layer_available() -> bool:
    """Whether numba's TBB threading layer loads here: the `tbb` package's library of a version numba
    accepts."""
    try:
        from numba.np.ufunc import parallel

        parallel._check_tbb_version_compatible()  # loads libtbb and checks its version, as numba does
        from numba.np.ufunc import tbbpool  # noqa: F401 - numba's layer itself, linked to that library
    except Exception:  # noqa: BLE001 - missing or incompatible library: numba would refuse the layer too
        return False
    return True


def resolve_backend(backend: str = "auto", size: int | None = None) -> str:
    """The backend that runs, "numpy" or "numba", for `backend` ("auto", "numpy" or "numba") and an input of
    `size` elements (None: large enough), by the rules of the module docstring. Raises ValueError for an
    unknown name (naming where it came from), ImportError when "numba" is asked for and does not import."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"environment variable {ENV_VAR} must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":  # the size test first: below every threshold numba is never imported
        large = size is None or size >= AUTO_MIN_ELEMENTS
        return "numba" if large and numba_available() and (size is None or size >= auto_min_elements()) else "numpy"
    if backend == "numba" and not numba_available():
        raise ImportError("backend 'numba' needs numba, which does not import: pip install 'normlab[fast]'")
    return backend


def auto_min_elements() -> int:
    """The fewest elements "auto" compiles: AUTO_MIN_ELEMENTS on numba's TBB layer, whose threads are awake
    within microseconds, AUTO_MIN_ELEMENTS_SLEEPING on any other (call after `numba_available()`)."""
    import numba

    return AUTO_MIN_ELEMENTS if numba.config.THREADING_LAYER == "tbb" else AUTO_MIN_ELEMENTS_SLEEPING


def compiled_twin(family: str, backend: str = "auto", x: np.ndarray | None = None) -> ModuleType | None:
    """The one dispatch point: the compiled twin of `family` (a key of TWINS) when `backend` resolves to
    numba for x and x is float32 or float64; None means: run NumPy. `backend` is checked whatever x's dtype,
    so a typo never goes unnoticed; x's size decides "auto" for the normalization; x=None means "any size,
    a compiled dtype" (a backward following its forward's choice)."""
    size = None if x is None or family in ANY_SIZE else x.size
    if resolve_backend(backend, size) != "numba" or (x is not None and x.dtype not in COMPILED_DTYPES):
        return None
    return _twin(family)


@cache
def _twin(family: str) -> ModuleType:
    return importlib.import_module(f"normlab.kernels.{TWINS[family]}")
