"""Keep numba's threads and BLAS's threads from competing for the cores.

A parallel region wakes every numba thread. Right after a BLAS call, OpenBLAS's own
threads still spin on the cores for a while, so the woken threads wait for a core and a
small kernel takes several times longer on two threads than on one. On a busy machine
the wake-up alone costs milliseconds. So small kernels run on one thread, and kernels
that call BLAS from numba's threads limit BLAS to one thread.
"""

from __future__ import annotations

import contextlib
import functools

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


@functools.lru_cache(maxsize=1)
def _blas_controller():
    # numba's np.dot calls BLAS through scipy.linalg.cython_blas (numba/np/linalg.py), so
    # that library must be loaded before the controller lists the loaded libraries.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def blas_single_thread():
    """Limit every loaded BLAS library to one thread inside the block."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield
