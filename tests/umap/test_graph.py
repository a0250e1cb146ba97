"""kNN search, fuzzy simplicial set and curve parameters against independent oracles."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy.optimize import curve_fit
from scipy.spatial.distance import cdist

from latentlens.umap import graph


def brute_force(X, k, metric):
    name = {"manhattan": "cityblock"}.get(metric, metric)
    D = cdist(X.astype(np.float64), X.astype(np.float64), metric=name)
    np.fill_diagonal(D, -1.0)
    order = np.argsort(D, axis=1, kind="stable")[:, :k]
    distances = np.take_along_axis(D, order, axis=1)
    distances[:, 0] = 0.0
    return order, distances


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "correlation", "manhattan"])
def test_exact_knn_matches_brute_force(metric):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12)).astype(np.float32) + 3.0
    indices, distances = graph.nearest_neighbors(X, 10, metric=metric, method="exact")
    ref_indices, ref_distances = brute_force(X, 10, metric)
    assert indices.dtype == np.int32
    assert distances.dtype == np.float32
    assert np.array_equal(indices[:, 0], np.arange(300))
    np.testing.assert_allclose(distances, ref_distances, rtol=1e-4, atol=1e-5)
    same = np.mean([set(a) == set(b) for a, b in zip(indices, ref_indices, strict=True)])
    assert same == 1.0


@pytest.mark.parametrize(("metric", "metric_code"), [("euclidean", 0), ("manhattan", 1)])
def test_exact_search_blocks_match_brute_force(metric, metric_code):
    rng = np.random.default_rng(2)
    data = rng.normal(size=(500, 24)).astype(np.float32)
    queries = rng.normal(size=(103, 24)).astype(np.float32)
    # 103 queries in blocks of 16: seven blocks, the last one padded.
    indices, distances = graph.exact_search(
        queries, data, 7, metric_code=metric_code, block_rows=16
    )
    name = {"manhattan": "cityblock"}.get(metric, metric)
    D = cdist(queries.astype(np.float64), data.astype(np.float64), metric=name)
    order = np.argsort(D, axis=1, kind="stable")[:, :7]
    assert np.array_equal(indices, order)
    np.testing.assert_allclose(distances, np.take_along_axis(D, order, axis=1), rtol=1e-5)

    # A query gives the same bits in another batch, at another place in its block.
    part_indices, part_distances = graph.exact_search(
        queries[50:53], data, 7, metric_code=metric_code, block_rows=16
    )
    assert np.array_equal(part_indices, indices[50:53])
    assert np.array_equal(part_distances, distances[50:53])


def test_exact_search_same_on_one_thread():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(400, 16)).astype(np.float32)
    parallel = graph.exact_search(data, data, 9, self_offset=0, block_rows=32)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        serial = graph.exact_search(data, data, 9, self_offset=0, block_rows=32)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(parallel[0], serial[0])
    assert np.array_equal(parallel[1], serial[1])
    assert np.array_equal(parallel[0][:, 0], np.arange(400))


def test_exact_knn_puts_self_before_duplicates():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0]], dtype=np.float32)
    indices, distances = graph.nearest_neighbors(X, 3, method="exact")
    assert indices[:, 0].tolist() == [0, 1, 2, 3]
    assert distances[:3, :3].max() == 0.0


def test_forest_search_recall_against_exact():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4.0, size=(10, 16))
    X = (centres[rng.integers(0, 10, 3000)] + rng.normal(size=(3000, 16))).astype(np.float32)
    exact, exact_dist = graph.nearest_neighbors(X, 15, method="exact")
    approx, approx_dist = graph.nearest_neighbors(X, 15, method="forest", random_state=3)
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    assert np.array_equal(approx[:, 0], np.arange(3000))
    # Every reported distance is the true distance of the reported pair.
    true = np.linalg.norm(X[approx] - X[:, None, :], axis=2)
    np.testing.assert_allclose(approx_dist, true, rtol=1e-4, atol=1e-4)
    again, _ = graph.nearest_neighbors(X, 15, method="forest", random_state=3)
    assert np.array_equal(approx, again)


def test_fuzzy_weights_hand_checked():
    # Three points on a line at 0, 1 and 3, k = 3 (self included).
    # Row 0: rho = 1 (nearest), sigma solves 1 + exp(-(3 - 1) / sigma) = log2(3),
    # so w(0, 2) = log2(3) - 1 = 0.58496. Row 1: neighbours at 1 and 2, rho = 1,
    # w(1, 2) = log2(3) - 1. Row 2: neighbours 1 (d=2) and 0 (d=3), rho = 2,
    # w(2, 0) = log2(3) - 1. Union: w + w' - w w'.
    X = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    indices, distances = graph.nearest_neighbors(X, 3, method="exact")
    G, sigma, rho = graph.fuzzy_simplicial_set(indices, distances, 3, return_sigma_rho=True)
    m = np.log2(3.0) - 1.0
    assert rho.tolist() == [1.0, 1.0, 2.0]
    np.testing.assert_allclose(sigma[0], 2.0 / -np.log(m), rtol=1e-4)
    dense = G.toarray()
    expected = np.array(
        [[0.0, 1.0, m + m - m * m], [1.0, 0.0, m + 1.0 - m], [m + m - m * m, 1.0, 0.0]]
    )
    np.testing.assert_allclose(dense, expected, atol=2e-5)
    assert (dense == dense.T).all()


def test_fuzzy_intersection_mix():
    X = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    indices, distances = graph.nearest_neighbors(X, 3, method="exact")
    G = graph.fuzzy_simplicial_set(indices, distances, 3, set_op_mix_ratio=0.0)
    m = np.log2(3.0) - 1.0
    np.testing.assert_allclose(G.toarray()[0, 2], m * m, atol=2e-5)


def test_sigma_solves_membership_sum():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    indices, distances = graph.nearest_neighbors(X, 12, method="exact")
    _, sigma, rho = graph.fuzzy_simplicial_set(indices, distances, 200, return_sigma_rho=True)
    gaps = np.maximum(distances[:, 1:] - rho[:, None], 0.0)
    sums = np.exp(-gaps / sigma[:, None]).sum(axis=1)
    np.testing.assert_allclose(sums, np.log2(12), atol=1e-3)


def test_find_ab_params_matches_curve_fit():
    for spread, min_dist in [(1.0, 0.1), (1.0, 0.0), (2.0, 0.5), (1.0, 0.8)]:
        x = np.linspace(0, 3 * spread, 300)
        y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
        (a_ref, b_ref), _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), x, y)
        a, b = graph.find_ab_params(spread, min_dist)
        assert a == pytest.approx(a_ref, rel=1e-4)
        assert b == pytest.approx(b_ref, rel=1e-4)


def test_graph_errors_name_the_value():
    X = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="metric='hamming' is not supported"):
        graph.nearest_neighbors(X, 3, metric="hamming")
    with pytest.raises(ValueError, match="n_neighbors=6 must be between 1 and the number"):
        graph.nearest_neighbors(X, 6)
    with pytest.raises(ValueError, match="min_dist=2.0 must be in"):
        graph.find_ab_params(1.0, 2.0)
    with pytest.raises(ValueError, match="n_samples=4"):
        graph.fuzzy_simplicial_set(np.zeros((5, 2), int), np.zeros((5, 2)), 4)
