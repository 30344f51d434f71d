"""Split a batch over threads, each running NumPy code with BLAS on one thread.

Why: a convolution done as one big im2col and one big matrix product writes a column matrix kh*kw times
the input's size (151 MB for a (64, 64, 32, 32) float32 input and 3x3 filters) to main memory, page-faults
it in, and reads it back; the copy itself runs on one thread while BLAS's threads wait. Done image by image,
each image's columns (2.4 MB) stay in cache and the copy and the product run on every core at once, one
image per thread. NumPy releases the GIL in both, so Python threads suffice.

How many threads: as many as NumPy's OpenBLAS would use (`OPENBLAS_NUM_THREADS`, or what
`normlab.blas.limited_blas_threads` set), so one setting governs both; BLAS is held to one thread per
worker meanwhile, so the machine is never oversubscribed. Without OpenBLAS (MKL, Accelerate) the work runs
in the calling thread and the BLAS library keeps its own threads.

OpenBLAS's thread setting is process-wide, so batches split from several user threads at once take turns
(a lock). After a fork the child starts its own worker threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from itertools import pairwise
from typing import TypeVar

from normlab.blas import blas_threads, limited_blas_threads

T = TypeVar("T")
_lock = threading.Lock()  # one batch at a time: OpenBLAS's thread count is process-wide
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool() -> None:
    """In a forked child the parent's worker threads do not exist: start a new pool when one is needed."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def worker_count() -> int:
    """Threads a batch is split over: OpenBLAS's thread count, or 1 without OpenBLAS."""
    return blas_threads() or 1


def split_over_threads(work: Callable[[int, int], T], n: int) -> list[T]:
    """Run work(start, stop) on contiguous blocks covering range(n), one block per thread; the calling
    thread takes the first block.

    Returns the blocks' results in block order (so sums of them are deterministic for a given thread
    count). An exception raised in a block is raised here, after every block has finished. Batches split
    from several threads at once take turns; `work` must not split another batch itself.
    """
    global _pool, _pool_size
    workers = min(worker_count(), n)
    if workers <= 1:
        return [work(0, n)]
    bounds = [n * k // workers for k in range(workers + 1)]
    with _lock, limited_blas_threads(1):
        if _pool is None or _pool_size < workers - 1:
            _pool, _pool_size = ThreadPoolExecutor(workers - 1, thread_name_prefix="normlab"), workers - 1
        futures = [_pool.submit(work, start, stop) for start, stop in pairwise(bounds[1:])]
        try:
            first = work(bounds[0], bounds[1])
        finally:
            wait(futures)
    return [first, *(future.result() for future in futures)]
