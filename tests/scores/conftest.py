"""Fixtures for the score tests."""

from __future__ import annotations

import pytest
import threadpoolctl


@pytest.fixture(autouse=True)
def single_blas_thread():
    """Run numpy's BLAS on one thread during each score test.

    These tests make thousands of small matrix products, which one thread runs about as fast
    as two. OpenBLAS threads that spin-wait also stall badly when other processes compete for
    the same cores, as on a shared 2-core CI machine. The previous limit is restored afterwards.
    """
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield
