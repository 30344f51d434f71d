"""Which implementation of the normalization core runs: NumPy, or the compiled numba twin.

The choice, strongest first:

1. the `backend=` argument of a forward function, when it is "numpy" or "numba";
2. the environment variable NORMLAB_BACKEND ("auto", "numpy" or "numba"), read on every call;
3. "auto": numba when it imports (`pip install normlab[fast]`) and the input has at least
   AUTO_MIN_ELEMENTS elements, NumPy otherwise. Below that size a compiled call's fixed cost (two
   parallel regions, about 0.1-0.2 ms on 2 cores) exceeds what NumPy needs for the whole layer.

Asking for "numba" where numba does not import is an error, never a silent fallback. Nothing imports
numba until a forward pass needs the choice, so `import normlab` stays fast.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from types import ModuleType

BACKENDS = ("auto", "numpy", "numba")
ENV_VAR = "NORMLAB_BACKEND"
AUTO_MIN_ELEMENTS = 1 << 17  # measured crossover: batch and layer norm, forward + backward, 2 cores


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
    return True


def choose_threading_layer(numba: ModuleType) -> None:
    """Unless NUMBA_THREADING_LAYER says otherwise, ask numba for its "workqueue" layer. Its threads sleep
    between parallel regions; OpenMP's spin, and on 2 cores shared with the convolutions' worker threads
    they took a core from them (a bn-cnn step's convolutions ran 1.6-1.75x slower next to them); on a machine
    whose cores are shared with other processes, OpenMP's barrier also waited a scheduler tick for a
    descheduled thread at every region (median 8 ms for a 1.4 ms kernel). The choice is process-wide and
    only takes effect if nothing has started numba's threads yet."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def resolve_backend(backend: str = "auto", size: int | None = None) -> str:
    """The backend that runs: "numpy" or "numba".

    Inputs:
    - backend: "auto", "numpy" or "numba". "auto" defers to NORMLAB_BACKEND, then to whether numba
      imports and `size` is at least AUTO_MIN_ELEMENTS.
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
    if backend == "auto":
        large = size is None or size >= AUTO_MIN_ELEMENTS
        return "numba" if large and numba_available() else "numpy"
    if backend == "numba" and not numba_available():
        raise ImportError("backend 'numba' needs numba, which does not import: pip install 'normlab[fast]'")
    return backend


def compiled_kernels(backend: str = "auto", size: int | None = None) -> ModuleType | None:
    """The compiled kernels module (`normlab.kernels.normalize_numba`) when `backend` resolves to numba
    for an input of `size` elements, else None."""
    if resolve_backend(backend, size) != "numba":
        return None
    from normlab.kernels import normalize_numba

    return normalize_numba


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
