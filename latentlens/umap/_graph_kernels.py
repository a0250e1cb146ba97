"""numba kernels for the neighbour graph: top-k selection, exact distances, fuzzy memberships.

The Python drivers live in :mod:`latentlens.umap.graph`. Every kernel is compiled with
``cache=True`` so a new process loads it from disk instead of recompiling.
"""

from __future__ import annotations

import numba
import numpy as np

from latentlens.umap._fastmath import FAST_FLAGS

# Bisection settings for sigma: the sum of memberships must hit log2(k) within this tolerance.
SMOOTH_K_TOLERANCE = 1e-5
# sigma is floored at this fraction of the mean neighbour distance, so that a row whose
# neighbours all sit at nearly the same distance does not get a vanishing bandwidth.
MIN_K_DIST_SCALE = 1e-3


@numba.njit(cache=True, inline="always")
def _insert_sorted(values, labels, size, value, label):
    """Insert ``(value, label)`` into the first ``size`` sorted slots, dropping the largest."""
    position = size - 1
    while position > 0 and values[position - 1] > value:
        values[position] = values[position - 1]
        labels[position] = labels[position - 1]
        position -= 1
    values[position] = value
    labels[position] = label


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def search_blocks(
    queries, data, squared_norms, k, block_rows, self_offset, metric_code, out_indices, out_values
):
    """Write the ``k`` data rows ranked closest to each query, in ascending order.

    Queries go in blocks of ``block_rows`` rows, one block per thread at a time. For
    ``metric_code`` 0 a block's ranking values are ``|x|^2 - 2 q.x`` from one GEMM of the
    zero-padded block. So every query meets the same BLAS call whatever its batch, and
    the caller limits BLAS to one thread. For 1 the values are L1 distances. When
    ``self_offset >= 0`` the data row ``self_offset + i`` is query ``i`` itself and is
    placed first whatever its value. Ties keep the lower row first.
    """
    m, n_features = queries.shape
    n = data.shape[0]
    n_blocks = (m + block_rows - 1) // block_rows
    for block in numba.prange(n_blocks):
        start = block * block_rows
        rows = min(block_rows, m - start)
        if metric_code == 0:
            padded = np.zeros((block_rows, n_features), dtype=np.float32)
            # Explicit loops: a 2-D slice assignment here took 4 s more to compile.
            for r in range(rows):
                for f in range(n_features):
                    padded[r, f] = queries[start + r, f]
            products = np.dot(padded, data.T)
        else:
            products = np.empty((0, 0), dtype=np.float32)
        values = np.empty(k, dtype=np.float32)
        labels = np.empty(k, dtype=np.int32)
        for r in range(rows):
            row = start + r
            values[:] = np.inf
            labels[:] = -1
            self_column = self_offset + row if self_offset >= 0 else -1
            first = 0
            if self_column >= 0:
                values[0] = -np.inf
                labels[0] = self_column
                first = 1
            for column in range(n):
                if column == self_column:
                    continue
                if metric_code == 0:
                    value = squared_norms[column] - np.float32(2.0) * products[r, column]
                else:
                    value = np.float32(0.0)
                    for f in range(n_features):
                        value += abs(queries[row, f] - data[column, f])
                if value < values[k - 1]:
                    _insert_sorted(values[first:], labels[first:], k - first, value, column)
            for j in range(k):
                out_indices[row, j] = labels[j]
                out_values[row, j] = values[j]


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def refine_distances(queries, data, candidates, metric_code, out_indices, out_distances):
    """Recompute exact distances to candidate neighbours and keep the closest, in order.

    ``metric_code`` is 0 for euclidean and 1 for manhattan (cosine and correlation reach
    this kernel as euclidean on prepared rows). Candidates equal to -1 are skipped. The
    first ``out_indices.shape[1]`` candidates by exact distance are kept, ties by index.
    """
    m, n_candidates = candidates.shape
    k = out_indices.shape[1]
    n_features = queries.shape[1]
    for row in numba.prange(m):
        values = np.full(k, np.inf, dtype=np.float32)
        labels = np.full(k, -1, dtype=np.int32)
        for c in range(n_candidates):
            j = candidates[row, c]
            if j < 0:
                continue
            total = 0.0
            if metric_code == 0:
                for f in range(n_features):
                    diff = np.float64(queries[row, f]) - np.float64(data[j, f])
                    total += diff * diff
                total = np.sqrt(total)
            else:
                for f in range(n_features):
                    total += abs(np.float64(queries[row, f]) - np.float64(data[j, f]))
            value = np.float32(total)
            if value < values[k - 1] or (value == values[k - 1] and j < labels[k - 1]):
                position = k - 1
                while position > 0 and (
                    values[position - 1] > value
                    or (values[position - 1] == value and labels[position - 1] > j)
                ):
                    values[position] = values[position - 1]
                    labels[position] = labels[position - 1]
                    position -= 1
                values[position] = value
                labels[position] = j
        for j in range(k):
            out_indices[row, j] = labels[j]
            out_distances[row, j] = values[j]


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def smooth_knn_dist(distances, n_iter, local_connectivity, bandwidth, skip_first):
    """Find rho (distance to the nearest neighbour) and sigma (bandwidth) per row.

    ``distances`` is float32 ``(n, k)`` sorted per row. sigma solves
    ``sum_j exp(-max(d_ij - rho_i, 0) / sigma_i) = log2(k) * bandwidth`` by bisection over
    the neighbours (the first column is skipped when ``skip_first``, because it is the
    point itself). rho interpolates between the ``floor(local_connectivity)``-th and the
    next non-zero distance. Returns float32 ``sigma`` and ``rho``, each ``(n,)``.
    """
    n, k = distances.shape
    target = np.log2(k) * bandwidth
    rho = np.zeros(n, dtype=np.float32)
    sigma = np.zeros(n, dtype=np.float32)
    mean_all = 0.0
    for i in range(n):
        for j in range(k):
            mean_all += distances[i, j]
    mean_all /= n * k
    first = 1 if skip_first else 0
    whole = int(np.floor(local_connectivity))
    fraction = local_connectivity - whole

    for i in numba.prange(n):
        row = distances[i]
        positive = row[row > 0.0]
        if positive.shape[0] >= local_connectivity:
            if whole > 0:
                rho_i = positive[whole - 1]
                if fraction > SMOOTH_K_TOLERANCE:
                    rho_i += fraction * (positive[whole] - positive[whole - 1])
            else:
                rho_i = fraction * positive[0]
        elif positive.shape[0] > 0:
            rho_i = positive.max()
        else:
            rho_i = 0.0

        low = 0.0
        high = np.inf
        mid = 1.0
        for _ in range(n_iter):
            total = 0.0
            for j in range(first, k):
                gap = row[j] - rho_i
                total += np.exp(-(gap / mid)) if gap > 0 else 1.0
            if abs(total - target) < SMOOTH_K_TOLERANCE:
                break
            if total > target:
                high = mid
                mid = (low + high) / 2.0
            else:
                low = mid
                mid = mid * 2.0 if high == np.inf else (low + high) / 2.0

        mean_i = 0.0
        for j in range(k):
            mean_i += row[j]
        mean_i /= k
        floor = MIN_K_DIST_SCALE * (mean_i if rho_i > 0.0 else mean_all)
        rho[i] = rho_i
        sigma[i] = max(mid, floor)
    return sigma, rho


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def membership_strengths(knn_indices, knn_distances, sigma, rho, self_rows):
    """Return COO rows, columns and weights ``exp(-max(d - rho, 0) / sigma)`` of the kNN graph.

    ``self_rows[i]`` is the row index of query ``i`` in the graph (``-1`` when the queries
    are new points, which have no self edge). Edges to ``-1`` neighbours and self edges get
    weight 0 and are dropped by the caller.
    """
    n, k = knn_indices.shape
    rows = np.empty(n * k, dtype=np.int32)
    cols = np.empty(n * k, dtype=np.int32)
    vals = np.empty(n * k, dtype=np.float32)
    for i in numba.prange(n):
        for j in range(k):
            position = i * k + j
            neighbour = knn_indices[i, j]
            rows[position] = i
            cols[position] = max(neighbour, 0)
            if neighbour < 0 or neighbour == self_rows[i]:
                vals[position] = 0.0
            elif knn_distances[i, j] - rho[i] <= 0.0 or sigma[i] == 0.0:
                vals[position] = 1.0
            else:
                vals[position] = np.exp(-((knn_distances[i, j] - rho[i]) / sigma[i]))
    return rows, cols, vals


@numba.njit(cache=True, parallel=True)
def hash_rows(data):
    """Return a uint64 FNV-1a style hash of each row's float32 bit pattern."""
    n, n_features = data.shape
    bits = data.view(np.uint32)
    out = np.empty(n, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for i in numba.prange(n):
        h = np.uint64(0xCBF29CE484222325)
        for f in range(n_features):
            h = (h ^ np.uint64(bits[i, f])) * prime
        out[i] = h
    return out


@numba.njit(cache=True)
def expand_knn(indices, distances, inverse, group_order, group_starts, out_indices, out_distances):
    """Turn a kNN table of distinct rows into the table of all rows, duplicates included.

    ``indices`` and ``distances`` (``(n_distinct, k)``, the row itself first) are the
    neighbours among distinct rows. ``inverse[r]`` is the distinct row of row ``r``.
    ``group_order[group_starts[p]:group_starts[p + 1]]`` lists the rows equal to distinct
    row ``p``. Row ``r`` gets itself, then the other copies of its row at distance 0, then
    every copy of each neighbour in order, up to ``out_indices.shape[1]`` entries. Slots
    left over get -1 and inf. This is the table a search over all rows would return, up
    to the order among equal distances.
    """
    n, k_out = out_indices.shape
    k = indices.shape[1]
    for r in range(n):
        p = inverse[r]
        out_indices[r, 0] = r
        out_distances[r, 0] = 0.0
        fill = 1
        for slot in range(group_starts[p], group_starts[p + 1]):
            member = group_order[slot]
            if member != r and fill < k_out:
                out_indices[r, fill] = member
                out_distances[r, fill] = 0.0
                fill += 1
        for j in range(1, k):
            q = indices[p, j]
            if q < 0 or fill >= k_out:
                continue
            for slot in range(group_starts[q], group_starts[q + 1]):
                if fill < k_out:
                    out_indices[r, fill] = group_order[slot]
                    out_distances[r, fill] = distances[p, j]
                    fill += 1
        for slot in range(fill, k_out):
            out_indices[r, slot] = -1
            out_distances[r, slot] = np.inf
