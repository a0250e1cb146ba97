"""Layout kernels: gradients against finite differences, fast pow, determinism."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from latentlens.umap import _layout_kernels as kernels
from latentlens.umap import graph, layout
from latentlens.umap._fastmath import fast_pow

A, B = graph.find_ab_params(1.0, 0.1)


@numba.njit
def _fast_pow_many(x, exponent):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = fast_pow(x[i], exponent)
    return out


@numba.njit
def _coefficients(d2, a, b, gamma):
    return kernels.attractive_coefficient(d2, a, b), kernels.repulsive_coefficient(d2, a, b, gamma)


def attractive_loss(yi, yj):
    d2 = np.sum((yi - yj) ** 2)
    return np.log1p(A * d2**B)


def repulsive_loss(yi, yj, gamma):
    q = 1.0 / (1.0 + A * np.sum((yi - yj) ** 2) ** B)
    return -gamma * np.log1p(-q)


def finite_difference(loss, yi, yj, step=1e-6):
    grad = np.zeros_like(yi)
    for c in range(yi.size):
        up, down = yi.copy(), yi.copy()
        up[c] += step
        down[c] -= step
        grad[c] = (loss(up, yj) - loss(down, yj)) / (2 * step)
    return grad


@pytest.mark.parametrize("offset", [[0.3, -0.2], [1.5, 2.0], [-4.0, 0.5], [0.05, 0.02]])
def test_attractive_gradient_matches_finite_differences(offset):
    yj = np.array([1.0, -2.0])
    yi = yj + np.array(offset)
    d2 = np.float32(np.sum((yi - yj) ** 2))
    coefficient, _ = _coefficients(d2, np.float32(A), np.float32(B), np.float32(1.0))
    # The kernel moves y_i by coefficient * (y_i - y_j), i.e. minus the loss gradient.
    step = coefficient * (yi - yj)
    np.testing.assert_allclose(step, -finite_difference(attractive_loss, yi, yj), rtol=2e-4)


@pytest.mark.parametrize("offset", [[1.0, 1.5], [3.0, -2.0], [0.0, 6.0]])
@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_repulsive_gradient_matches_finite_differences(offset, gamma):
    yj = np.array([0.5, 0.5])
    yi = yj + np.array(offset)
    d2 = np.float32(np.sum((yi - yj) ** 2))
    _, coefficient = _coefficients(d2, np.float32(A), np.float32(B), np.float32(gamma))
    step = coefficient * (yi - yj)
    expected = -finite_difference(lambda a, b: repulsive_loss(a, b, gamma), yi, yj)
    # The kernel adds 0.001 to d2 in the denominator, a relative change of 0.001 / d2.
    np.testing.assert_allclose(step, expected, rtol=2e-4 + 1e-3 / float(d2))


@numba.njit
def _tabled_many(d2, table, a, b):
    out = np.empty_like(d2)
    for i in range(d2.size):
        out[i] = kernels.tabled_attractive_coefficient(d2[i], table, a, b)
    return out


@pytest.mark.parametrize("min_dist", [0.1, 0.5, 0.001])
def test_attraction_table_matches_the_formula(min_dist):
    a, b = graph.find_ab_params(1.0, min_dist)
    table = kernels.attraction_table(a, b)
    # Inside the table (2^-24 to 2^16), at its edges, and outside it on both sides.
    d2 = np.concatenate([np.logspace(-9, 6, 40001), [2.0**-24, 2.0**16, 1e-12, 1e9]])
    d2 = d2.astype(np.float32)
    approx = _tabled_many(d2, table, np.float32(a), np.float32(b))
    wide = d2.astype(np.float64)
    exact = -2.0 * a * b * wide ** (b - 1.0) / (1.0 + a * wide**b)
    assert np.max(np.abs(approx / exact - 1.0)) < 1e-4
    assert _tabled_many(np.zeros(1, np.float32), table, np.float32(a), np.float32(b))[0] == 0.0


def test_fast_pow_relative_error():
    x = np.logspace(-20, 20, 50001).astype(np.float32)
    for exponent in (0.895, -0.105, 0.79, 1.05):
        approx = _fast_pow_many(x, np.float32(exponent))
        exact = x.astype(np.float64) ** exponent
        assert np.max(np.abs(approx / exact - 1.0)) < 1e-5


def _small_problem(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    indices, distances = graph.nearest_neighbors(X, 10, method="exact")
    fuzzy = graph.fuzzy_simplicial_set(indices, distances, n)
    start = rng.uniform(0, 10, size=(n, 2)).astype(np.float32)
    return fuzzy, start


def _run(fuzzy, start, parallel_min_edges, monkeypatch):
    monkeypatch.setattr(layout, "PARALLEL_MIN_EDGES", parallel_min_edges)
    schedule = layout.edge_schedule(fuzzy, 50, 5)
    return layout.optimize_layout(
        start,
        None,
        schedule,
        n_epochs=50,
        a=A,
        b=B,
        seed=7,
        vertex_keys=np.arange(start.shape[0], dtype=np.uint64),
    )


def test_serial_and_parallel_layouts_identical(monkeypatch):
    fuzzy, start = _small_problem()
    serial = _run(fuzzy, start, 10**12, monkeypatch)
    parallel = _run(fuzzy, start, 0, monkeypatch)
    assert np.isfinite(serial).all()
    assert not np.array_equal(serial, start)
    np.testing.assert_array_equal(serial, parallel)


def test_layout_independent_of_thread_count(monkeypatch):
    fuzzy, start = _small_problem(seed=1)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(fuzzy, start, 0, monkeypatch)
    finally:
        numba.set_num_threads(before)
    many = _run(fuzzy, start, 0, monkeypatch)
    np.testing.assert_array_equal(one, many)


def test_layout_reduces_cross_entropy():
    fuzzy, start = _small_problem(seed=2)
    schedule = layout.edge_schedule(fuzzy, 100, 5)
    end = layout.optimize_layout(
        start,
        None,
        schedule,
        n_epochs=100,
        a=A,
        b=B,
        seed=3,
        vertex_keys=np.arange(start.shape[0], dtype=np.uint64),
    )
    coo = fuzzy.tocoo()

    def attraction(Y):
        d2 = np.sum((Y[coo.row] - Y[coo.col]) ** 2, axis=1)
        return np.sum(coo.data * np.log1p(A * d2**B))

    assert attraction(end) < 0.5 * attraction(start)
