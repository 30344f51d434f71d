"""Which implementation of the normalization core runs: NumPy, or the compiled numba twin.

The choice, strongest first:

1. the `backend=` argument of a forward function, when it is "numpy" or "numba";
2. the environment variable NORMLAB_BACKEND ("auto", "numpy" or "numba"), read on every call;
3. "auto": numba when it imports (`pip install normlab[fast]`) and the input has at least
   `auto_min_elements()` elements (2^16 on TBB, 2^17 otherwise), NumPy otherwise. Below that size a
   compiled call's fixed cost (its parallel regions and their threads' wake-up) exceeds what NumPy needs
   for the whole layer.

Asking for "numba" where numba does not import is an error, never a silent fallback. Nothing imports
numba until a forward pass needs the choice, so `import normlab` stays fast.

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

BACKENDS = ("auto", "numpy", "numba")
ENV_VAR = "NORMLAB_BACKEND"
AUTO_MIN_ELEMENTS = 1 << 16  # measured crossover on numba's TBB layer, float32 forward + backward on 2 cores:
#                              numba wins from 2**14-2**15 elements (at 2**16: layer norm 96 vs 340 us,
#                              batch norm 160 vs 363 us)
AUTO_MIN_ELEMENTS_SLEEPING = 1 << 17  # on any other layer, whose ~0.1 ms per region to wake its threads
#                                       loses at 2**16 (workqueue: layer norm 237 vs 190 us, batch norm 401
#                                       vs 364) and wins at 2**17 (270 vs 335, 427 vs 668)


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


# Measured on 2 shared cores with an empty cache: the batch norm kernels of the default `normlab train` 15 s,
# a bn-cnn run (also pooling, convolution copies, Winograd) about 40 s.
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

    Why, measured on 2 shared cores: a parallel region costs TBB 1.4 us back to back and 10-80 us after an
    idle 1-100 ms, and its workers spin only briefly (1 ms of CPU in the 0.2 s after a region). The
    workqueue's threads always sleep, so every region pays 75-140 us to wake them (twice: numba first
    syncs each worker's thread count); a bn-cnn training step ran in 57 instead of 64 ms on TBB, and a
    (8192, 768) layer norm's forward + backward in 3.0 instead of 3.4 ms. OpenMP's workers spin: back to
    back it costs 1.3 us, but they took a core from the convolutions' BLAS threads (1.6-1.75x slower), and
    after an idle 0.1 s a region waited 7.8 ms for a descheduled thread. The choice is process-wide and
    only takes effect if nothing has started numba's threads yet."""
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
    """The backend that runs: "numpy" or "numba".

    Inputs:
    - backend: "auto", "numpy" or "numba". "auto" defers to NORMLAB_BACKEND, then to whether numba
      imports and `size` is at least `auto_min_elements()`.
    - size: elements of the input, or None for "large enough".

    Raises ValueError for an unknown name (naming where it came from) and ImportError when "numba" is
    asked for and does not import.
    """
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


def compiled_kernels(backend: str = "auto", size: int | None = None) -> ModuleType | None:
    """The compiled kernels module (`normlab.kernels.normalize`) when `backend` resolves to numba
    for an input of `size` elements, else None."""
    if resolve_backend(backend, size) != "numba":
        return None
    from normlab.kernels import normalize

    return normalize


def _compiled(module: str, backend: str) -> ModuleType | None:
    """`normlab.kernels.<module>` when `backend` resolves to numba (at any size), else None."""
    if resolve_backend(backend) != "numba":
        return None
    return importlib.import_module(f"normlab.kernels.{module}")


def compiled_conv_kernels(backend: str = "auto") -> ModuleType | None:
    """The compiled convolution copies (`normlab.kernels.im2col_numba`) when `backend` resolves to numba,
    else None. At any size: they run one chunk per thread, with no parallel region to start."""
    return _compiled("im2col_numba", backend)


def compiled_winograd_kernels(backend: str = "auto") -> ModuleType | None:
    """The compiled Winograd tile transforms (`normlab.kernels.winograd_numba`) when `backend` resolves to
    numba, else None."""
    return _compiled("winograd_numba", backend)


def compiled_pixel_kernels(backend: str = "auto") -> ModuleType | None:
    """The compiled channels-last copies (`normlab.kernels.pixels_numba`) when `backend` resolves to numba,
    else None. At any size, like the convolution copies."""
    return _compiled("pixels_numba", backend)


def compiled_pool_kernels(backend: str = "auto") -> ModuleType | None:
    """The compiled max and average pooling (`normlab.kernels.pool_numba`) when `backend` resolves to
    numba, else None. At any size, like the convolution copies: one block of planes per thread."""
    return _compiled("pool_numba", backend)
