"""The neighbour graph of UMAP: kNN search, fuzzy simplicial set, and the curve parameters.

Public functions used by :class:`latentlens.umap.UMAP` and by the parametric encoder:

- :func:`nearest_neighbors`: exact search with BLAS up to a measured size, an approximate
  random projection forest with neighbour descent above;
- :func:`fuzzy_simplicial_set`: the symmetric fuzzy graph built from a kNN graph;
- :func:`find_ab_params`: the ``a, b`` of the low-dimensional similarity ``1 / (1 + a d^(2b))``.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse

from latentlens.umap import _graph_kernels as kernels
from latentlens.umap._threads import blas_single_thread

logger = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine", "correlation", "manhattan")
KNN_METHODS = ("auto", "exact", "forest", "pynndescent")

# Above this row count nearest_neighbors switches from the exact blocked search to the
# approximate forest search. benchmarks/umap_knn_threshold.py on 128-d Gaussian clusters
# (2-core x86, OpenBLAS, busy machine) gave exact 1.82 s / forest 1.34 s (recall 0.996)
# at 4,000 rows and 4.54 s / 3.52 s (recall 0.985) at 8,000.
# NOTE: the manhattan threshold was not measured separately; its exact search has no
# BLAS, so the true crossover is likely lower.
EXACT_MAX_ROWS = 4096
EXACT_MAX_ROWS_MANHATTAN = 4096

# Rows of queries per GEMM call. Queries always go through blocks of this fixed height
# (the last one padded), so each query meets the same BLAS call whatever else is in its batch.
QUERY_BLOCK_ROWS = 256
FIT_BLOCK_ROWS = 512
# Bytes of GEMM products one thread keeps at once in fit's exact search. Large searches
# take shorter blocks to stay under it.
FIT_BLOCK_BYTES = 32 * 2**20


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; use one of {', '.join(METRICS)}.")


def prepare_rows(X, metric, center=None):
    """Return float32 rows on which a euclidean (or manhattan) search gives ``metric``'s order.

    cosine rows are scaled to unit norm and correlation rows are centred first, so that
    ``1 - cos = ||u - v||^2 / 2`` lets both use the euclidean machinery. ``center`` is
    subtracted from euclidean rows (it does not change distances and keeps the GEMM
    trick accurate); pass the training centre when preparing queries.
    """
    X = np.asarray(X, dtype=np.float32)
    if metric in ("cosine", "correlation"):
        if metric == "correlation":
            X = X - X.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64)).astype(np.float32)
        # NOTE: a zero row stays zero, so its cosine distance to any unit row comes out
        # as 0.5 instead of 1.0. A zero row has no direction, so no value is right.
        norms[norms == 0.0] = 1.0
        return np.ascontiguousarray(X / norms[:, None])
    if metric == "euclidean" and center is not None:
        return np.ascontiguousarray(X - center, dtype=np.float32)
    return np.ascontiguousarray(X)


def convert_distances(distances, metric):
    """Turn euclidean distances on prepared rows into ``metric``'s distances, in place."""
    if metric in ("cosine", "correlation"):
        np.multiply(distances, distances, out=distances)
        distances *= 0.5
    return distances


def _candidate_count(n_neighbors, n_data):
    return min(n_data, n_neighbors + max(4, n_neighbors // 4))


def exact_search(queries, data, n_neighbors, *, metric_code=0, self_offset=None, block_rows):
    """Exact kNN of ``queries`` among ``data`` (both prepared float32 rows).

    Euclidean candidates come from a GEMM (``|x|^2 - 2 q.x``) and their distances are
    recomputed exactly, so the float32 cancellation of the GEMM trick cannot leak into
    the returned distances. ``self_offset`` is set when ``queries`` are rows of ``data``
    (row ``i`` of the queries is row ``self_offset + i`` of the data): the point itself
    then comes first. Queries are processed in blocks of exactly ``block_rows`` rows.
    """
    n_queries = queries.shape[0]
    n_data = data.shape[0]
    indices = np.empty((n_queries, n_neighbors), dtype=np.int32)
    distances = np.empty((n_queries, n_neighbors), dtype=np.float32)
    euclidean = metric_code == 0
    n_candidates = _candidate_count(n_neighbors, n_data) if euclidean else n_neighbors
    squared_norms = (
        np.einsum("ij,ij->i", data, data) if euclidean else np.empty(0, dtype=np.float32)
    )
    candidate_indices = np.empty((n_queries, n_candidates), dtype=np.int32)
    candidate_values = np.empty((n_queries, n_candidates), dtype=np.float32)
    # Each numba thread runs single-threaded GEMMs on its own blocks and ranks the rows
    # while they are in cache. BLAS threads would compete with numba's for the cores.
    with blas_single_thread():
        kernels.search_blocks(
            queries,
            data,
            squared_norms,
            n_candidates,
            block_rows,
            -1 if self_offset is None else self_offset,
            metric_code,
            candidate_indices,
            candidate_values,
        )
        if euclidean:
            kernels.refine_distances(queries, data, candidate_indices, 0, indices, distances)
    if not euclidean:
        indices[:] = candidate_indices
        # The point itself was ranked first with -inf; its distance is 0.
        np.maximum(candidate_values, 0.0, out=distances)
    if self_offset is not None:
        # The point itself may tie with duplicates at distance 0. It goes first.
        _move_self_first(indices, distances, self_offset)
    return indices, distances


def _move_self_first(indices, distances, self_offset):
    rows = np.arange(indices.shape[0], dtype=np.int32) + self_offset
    misplaced = np.flatnonzero(indices[:, 0] != rows)
    for i in misplaced:
        row = list(indices[i])
        dist = list(distances[i])
        if rows[i] in row:
            p = row.index(rows[i])
            del row[p]
            del dist[p]
        else:
            row.pop()
            dist.pop()
        indices[i] = [rows[i], *row]
        distances[i] = [0.0, *dist]


def forest_search(
    data,
    n_neighbors,
    metric,
    seed,
    *,
    n_trees=None,
    leaf_size=None,
    max_rounds=10,
    tolerance=0.001,
    search_neighbors=None,
    max_expand=None,
):
    """Approximate kNN of prepared rows: random projection forest, then neighbour descent.

    Both steps are numba kernels cached on disk (see :mod:`latentlens.umap._ann_kernels`),
    so a new process pays no compilation. Returns ``(indices, distances)`` with the point
    itself first; distances are euclidean (or manhattan for ``metric="manhattan"``).
    """
    from latentlens.umap import _ann_kernels as ann

    n = data.shape[0]
    metric_code = 1 if metric == "manhattan" else 0
    if n_trees is None:
        n_trees = min(32, 4 + int(round(np.sqrt(n) / 40.0)))
    if leaf_size is None:
        leaf_size = max(2 * n_neighbors, 32)
    requested = n_neighbors
    if search_neighbors is None:
        # Rows longer than requested during the descent raise recall (0.89 -> 0.96 on
        # 20,000 x 128 Gaussian clusters at k=15) for about twice the work.
        search_neighbors = n_neighbors + n_neighbors // 2
    if max_expand is None:
        max_expand = n_neighbors
    n_neighbors = max(n_neighbors, min(search_neighbors, n))
    seed = np.uint64(seed)
    orders = np.empty((n_trees, n), dtype=np.int64)
    leaf_of_point = np.empty((n_trees, n), dtype=np.int64)
    leaf_starts = np.zeros((n_trees, n), dtype=np.int64)
    leaf_stops = np.zeros((n_trees, n), dtype=np.int64)
    ann.build_forest(data, seed, n_trees, leaf_size, orders, leaf_of_point, leaf_starts, leaf_stops)
    values = np.empty((n, n_neighbors), dtype=np.float32)
    labels = np.empty((n, n_neighbors), dtype=np.int32)
    ann.leaf_candidates(
        data, orders, leaf_of_point, leaf_starts, leaf_stops, metric_code, values, labels
    )
    del orders, leaf_of_point, leaf_starts, leaf_stops

    new_values = np.empty_like(values)
    new_labels = np.empty_like(labels)
    flags = np.ones(labels.shape, dtype=np.uint8)
    new_flags = np.empty_like(flags)
    changed = np.zeros(n, dtype=np.int64)
    reverse_indptr = np.zeros(n + 1, dtype=np.int64)
    reverse_rows = np.empty(n * (n_neighbors - 1), dtype=np.int32)
    reverse_new = np.empty(n * (n_neighbors - 1), dtype=np.uint8)
    for round_index in range(max_rounds):
        ann.reverse_lists(labels, flags, reverse_indptr, reverse_rows, reverse_new)
        ann.descent_round(
            data,
            metric_code,
            values,
            labels,
            flags,
            reverse_indptr,
            reverse_rows,
            reverse_new,
            n_neighbors,
            max_expand,
            new_values,
            new_labels,
            new_flags,
            changed,
        )
        values, new_values = new_values, values
        labels, new_labels = new_labels, labels
        flags, new_flags = new_flags, flags
        updates = int(changed.sum())
        logger.debug("neighbour descent round %d: %d updates", round_index + 1, updates)
        if updates <= tolerance * n * n_neighbors:
            break
    labels = np.ascontiguousarray(labels[:, :requested])
    values = np.ascontiguousarray(values[:, :requested])
    values[:, 0] = 0.0
    if metric_code == 0:
        np.sqrt(values, out=values)
    return labels, values


def graph_search(
    queries, data, knn_indices, landmarks, n_neighbors, metric, *, pool_size=None, n_seeds=8
):
    """Approximate kNN of prepared ``queries`` among prepared ``data`` through its kNN graph.

    Each query is searched on its own (see :func:`_ann_kernels.graph_query`), so its
    neighbours do not depend on the other queries of the batch. Returns int32 indices
    and float32 distances in the prepared space (euclidean or manhattan).
    """
    from latentlens.umap import _ann_kernels as ann

    if pool_size is None:
        pool_size = max(4 * n_neighbors, 64)
    pool_size = min(pool_size, data.shape[0])
    n_seeds = min(n_seeds, landmarks.shape[0], pool_size)
    indices = np.empty((queries.shape[0], n_neighbors), dtype=np.int32)
    distances = np.empty((queries.shape[0], n_neighbors), dtype=np.float32)
    ann.graph_query(
        np.ascontiguousarray(queries, dtype=np.float32),
        data,
        np.ascontiguousarray(knn_indices, dtype=np.int64),
        landmarks.astype(np.int64),
        n_seeds,
        pool_size,
        1 if metric == "manhattan" else 0,
        indices,
        distances,
    )
    return indices, distances


def nndescent_search(data, n_neighbors, metric, seed):
    """Approximate kNN of the prepared rows with pynndescent; returns the index too."""
    from pynndescent import NNDescent

    n = data.shape[0]
    n_trees = min(64, 5 + int(round(np.sqrt(n) / 20.0)))
    n_iters = max(5, int(round(np.log2(n))))
    index = NNDescent(
        data,
        metric="manhattan" if metric == "manhattan" else "euclidean",
        n_neighbors=n_neighbors,
        n_trees=n_trees,
        n_iters=n_iters,
        max_candidates=60,
        low_memory=True,
        compressed=False,
        random_state=seed,
        verbose=False,
    )
    indices, distances = index.neighbor_graph
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    distances = np.ascontiguousarray(distances, dtype=np.float32)
    _move_self_first(indices, distances, 0)
    return indices, distances


def nearest_neighbors(
    X,
    n_neighbors,
    *,
    metric="euclidean",
    random_state=None,
    method="auto",
):
    """Find the ``n_neighbors`` nearest neighbours of every row of ``X`` (itself included).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Data, converted to float32.
    n_neighbors : int
        Neighbours per row, the row itself counted (column 0 is the row itself).
    metric : {"euclidean", "cosine", "correlation", "manhattan"}, default="euclidean"
        Distance. cosine is ``1 - cos``, correlation is ``1 - pearson r``.
    random_state : int or None, default=None
        Seed of the random projection trees (unused by the exact search). The
        approximate search is deterministic for a given seed, whatever the thread count.
    method : {"auto", "exact", "forest", "pynndescent"}, default="auto"
        "auto" searches exactly (BLAS, blocked) up to ``EXACT_MAX_ROWS`` rows
        (``EXACT_MAX_ROWS_MANHATTAN`` for manhattan) and with "forest" above.
        "forest" is a random projection forest followed by neighbour descent, with
        kernels cached on disk. "pynndescent" calls pynndescent's NNDescent, whose search
        compiles again in every new process (tens of seconds).

    Returns
    -------
    indices : ndarray of shape (n_samples, n_neighbors), int32
        Neighbour rows sorted by distance, ``indices[:, 0] == arange(n_samples)``.
    distances : ndarray of shape (n_samples, n_neighbors), float32
        Matching distances in ``metric``'s units.

    Raises
    ------
    ValueError
        If ``metric`` or ``method`` is unknown or ``n_neighbors`` is not in
        ``[1, n_samples]``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    >>> idx, dist = nearest_neighbors(X, 2)
    >>> idx.tolist(), dist.tolist()
    ([[0, 1], [1, 0], [2, 1]], [[0.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    """
    _check_metric(metric)
    if method not in KNN_METHODS:
        raise ValueError(
            f"method={method!r} is not supported; use one of {', '.join(KNN_METHODS)}."
        )
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if not 1 <= n_neighbors <= n:
        raise ValueError(
            f"n_neighbors={n_neighbors} must be between 1 and the number of rows ({n}); "
            "lower n_neighbors or pass more rows."
        )
    center = X.mean(axis=0, dtype=np.float64).astype(np.float32) if metric == "euclidean" else None
    data = prepare_rows(X, metric, center)
    limit = EXACT_MAX_ROWS_MANHATTAN if metric == "manhattan" else EXACT_MAX_ROWS
    use_exact = method == "exact" or (method == "auto" and n <= limit)
    if use_exact:
        indices, distances = exact_search(
            data,
            data,
            n_neighbors,
            metric_code=1 if metric == "manhattan" else 0,
            self_offset=0,
            block_rows=min(FIT_BLOCK_ROWS, n, max(32, FIT_BLOCK_BYTES // (4 * n))),
        )
    elif method == "pynndescent":
        seed = None if random_state is None else int(random_state)
        indices, distances = nndescent_search(data, n_neighbors, metric, seed)
    else:
        seed = 0 if random_state is None else int(random_state)
        indices, distances = forest_search(data, n_neighbors, metric, seed)
    return indices, convert_distances(distances, metric)


def fuzzy_simplicial_set(
    knn_indices,
    knn_distances,
    n_samples,
    *,
    local_connectivity=1.0,
    set_op_mix_ratio=1.0,
    return_sigma_rho=False,
):
    """Build UMAP's symmetric fuzzy graph from a kNN graph.

    Each row ``i`` gets ``rho_i`` (distance to its nearest neighbour, interpolated by
    ``local_connectivity``) and ``sigma_i`` (found by bisection so that the memberships of
    its neighbours sum to ``log2(k)``). The directed membership is
    ``w_ij = exp(-max(d_ij - rho_i, 0) / sigma_i)``, and the graph is the fuzzy union
    ``W + W.T - W * W.T`` (``set_op_mix_ratio=1``), mixed towards the intersection
    ``W * W.T`` as ``set_op_mix_ratio`` goes to 0.

    Parameters
    ----------
    knn_indices : ndarray of shape (n_samples, k), int
        Neighbour rows as returned by :func:`nearest_neighbors`; -1 marks a missing
        neighbour. When column 0 is the row itself it is left out of the bisection.
    knn_distances : ndarray of shape (n_samples, k), float
        Matching distances, sorted ascending per row.
    n_samples : int
        Number of vertices of the graph.
    local_connectivity : float, default=1.0
        How many nearest neighbours each point is assumed fully connected to.
    set_op_mix_ratio : float, default=1.0
        1.0 for the fuzzy union, 0.0 for the fuzzy intersection.
    return_sigma_rho : bool, default=False
        Also return ``sigma`` and ``rho`` (float32, ``(n_samples,)``).

    Returns
    -------
    graph : scipy.sparse.csr_matrix of shape (n_samples, n_samples), float32
        Symmetric, zero diagonal, weights in ``(0, 1]``.

    Raises
    ------
    ValueError
        If the shapes of the two arrays differ or do not match ``n_samples``.

    Examples
    --------
    >>> import numpy as np
    >>> idx = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    >>> dist = np.array([[0, 1, 3], [0, 1, 2], [0, 2, 3]], dtype=np.float32)
    >>> graph = fuzzy_simplicial_set(idx, dist, 3)
    >>> round(float(graph[0, 1]), 3), round(float(graph[0, 2]), 3)
    (1.0, 0.585)
    """
    knn_indices = np.ascontiguousarray(knn_indices, dtype=np.int32)
    knn_distances = np.ascontiguousarray(knn_distances, dtype=np.float32)
    if knn_indices.ndim != 2 or knn_indices.shape != knn_distances.shape:
        raise ValueError(
            f"knn_indices {knn_indices.shape} and knn_distances {knn_distances.shape} must "
            "be 2-D arrays of the same shape (n_samples, k)."
        )
    if knn_indices.shape[0] != n_samples:
        raise ValueError(
            f"knn_indices has {knn_indices.shape[0]} rows but n_samples={n_samples}; "
            "pass one row of neighbours per sample."
        )
    rows = np.arange(n_samples, dtype=np.int32)
    skip_first = bool(np.all(knn_indices[:, 0] == rows))
    sigma, rho = kernels.smooth_knn_dist(
        knn_distances, 64, float(local_connectivity), 1.0, skip_first
    )
    r, c, v = kernels.membership_strengths(knn_indices, knn_distances, sigma, rho, rows)
    keep = v > 0
    directed = scipy.sparse.csr_matrix(
        (v[keep], (r[keep], c[keep])), shape=(n_samples, n_samples), dtype=np.float32
    )
    graph = symmetrize(directed, set_op_mix_ratio)
    if return_sigma_rho:
        return graph, sigma, rho
    return graph


def symmetrize(directed, set_op_mix_ratio=1.0):
    """Combine a directed fuzzy graph with its transpose (fuzzy union / intersection)."""
    transpose = directed.T.tocsr()
    product = directed.multiply(transpose)
    graph = set_op_mix_ratio * (directed + transpose - product) + (1.0 - set_op_mix_ratio) * product
    graph = scipy.sparse.csr_matrix(graph, dtype=np.float32)
    graph.eliminate_zeros()
    graph.sort_indices()
    return graph


def find_ab_params(spread, min_dist):
    """Fit ``a, b`` so that ``1 / (1 + a x^(2b))`` follows UMAP's target similarity curve.

    The target is 1 for ``x < min_dist`` and ``exp(-(x - min_dist) / spread)`` beyond,
    sampled at 300 points of ``[0, 3 * spread]``; the fit is least squares, solved by
    Levenberg-Marquardt from ``a = b = 1``.

    Parameters
    ----------
    spread : float
        Scale of the embedded points (> 0).
    min_dist : float
        Distance under which embedded points count as identical (``0 <= min_dist``).

    Returns
    -------
    a, b : float

    Raises
    ------
    ValueError
        If ``spread <= 0``, ``min_dist < 0`` or ``min_dist > spread``.

    Examples
    --------
    >>> a, b = find_ab_params(1.0, 0.1)
    >>> round(a, 2), round(b, 2)
    (1.58, 0.9)
    """
    spread = float(spread)
    min_dist = float(min_dist)
    if not spread > 0:
        raise ValueError(f"spread={spread} must be positive; use e.g. spread=1.0.")
    if not 0 <= min_dist <= spread:
        raise ValueError(
            f"min_dist={min_dist} must be in [0, spread={spread}]; lower min_dist or raise spread."
        )
    x = np.linspace(0.0, 3.0 * spread, 300)
    target = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    log_x = np.log(np.where(x > 0, x, 1.0))

    def residual_and_jacobian(a, b):
        power = np.where(x > 0, np.exp(2.0 * b * log_x), 0.0)
        denominator = 1.0 + a * power
        residual = 1.0 / denominator - target
        d_a = -power / denominator**2
        d_b = -a * power * 2.0 * log_x / denominator**2
        return residual, np.stack([d_a, d_b], axis=1)

    params = np.array([1.0, 1.0])
    damping = 1e-3
    residual, jacobian = residual_and_jacobian(*params)
    cost = residual @ residual
    for _ in range(200):
        normal = jacobian.T @ jacobian
        step = np.linalg.solve(normal + damping * np.diag(np.diag(normal)), -jacobian.T @ residual)
        trial = params + step
        if trial[0] <= 0 or trial[1] <= 0:
            damping *= 10.0
            continue
        new_residual, new_jacobian = residual_and_jacobian(*trial)
        new_cost = new_residual @ new_residual
        if new_cost < cost:
            converged = cost - new_cost < 1e-15 * max(cost, 1e-30)
            params, residual, jacobian, cost = trial, new_residual, new_jacobian, new_cost
            damping = max(damping / 10.0, 1e-12)
            if converged or np.abs(step).max() < 1e-12:
                break
        else:
            damping *= 10.0
            if damping > 1e12:
                break
    return float(params[0]), float(params[1])
