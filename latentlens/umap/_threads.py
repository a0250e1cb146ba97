"""Run small numba kernels on one thread.

A parallel region wakes every numba thread. Right after a BLAS call, OpenBLAS's own
threads still spin on the cores for a while, so the woken threads wait for a core and a
small kernel takes several times longer on two threads than on one. On a busy machine
the wake-up alone costs milliseconds.
"""

from __future__ import annotations

import contextlib

import numba

# Below this many units of work (edges, or rows times neighbours) a kernel runs on one
# thread.
SMALL_WORK = 100_000


@contextlib.contextmanager
def single_thread_below(work, threshold=SMALL_WORK):
    """Limit numba to one thread inside the block when ``work < threshold``."""
    if work >= threshold:
        yield
        return
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)
