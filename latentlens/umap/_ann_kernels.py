"""numba kernels of the approximate kNN search: random projection forest + neighbour descent.

The search runs in two steps, both parallel over points and race-free:

1. Random projection trees split the rows by hyperplanes until leaves hold at most
   ``leaf_size`` rows. Each point is compared with the other rows of its leaf in every
   tree, and keeps the closest ``k``.
2. Neighbour descent: each point compares itself with the neighbours of its
   neighbours (and its reverse neighbours), reading the previous round's graph and
   writing only its own row, until few rows change.

Every random choice comes from a stream keyed on ``(seed, tree, node)``, so the result
does not depend on the number of threads.
"""

from __future__ import annotations

import numba
import numpy as np

from latentlens.umap._fastmath import FAST_FLAGS
from latentlens.umap._rng import bounded_index, next_state, stream_state


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def _squared_distance(data, p, q):
    total = np.float32(0.0)
    for f in range(data.shape[1]):
        diff = data[p, f] - data[q, f]
        total += diff * diff
    return total


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def _manhattan_distance(data, p, q):
    total = np.float32(0.0)
    for f in range(data.shape[1]):
        total += abs(data[p, f] - data[q, f])
    return total


@numba.njit(cache=True, inline="always")
def _distance(data, p, q, metric_code):
    if metric_code == 0:
        return _squared_distance(data, p, q)
    return _manhattan_distance(data, p, q)


@numba.njit(cache=True, inline="always")
def _heap_push(values, labels, value, label):
    """Insert into a sorted row (ascending) of fixed length unless worse or present.

    Returns 1 when the row changed. Ties keep the lower label first.
    """
    k = values.shape[0]
    last = k - 1
    if value > values[last] or (value == values[last] and label >= labels[last]):
        return 0
    for j in range(k):
        if labels[j] == label:
            return 0
    position = last
    while position > 0 and (
        values[position - 1] > value
        or (values[position - 1] == value and labels[position - 1] > label)
    ):
        values[position] = values[position - 1]
        labels[position] = labels[position - 1]
        position -= 1
    values[position] = value
    labels[position] = label
    return 1


@numba.njit(cache=True, fastmath=FAST_FLAGS)
def _build_tree(data, seed, tree, leaf_size, order, leaf_bounds):
    """Split rows into leaves of at most ``leaf_size`` rows by random hyperplanes.

    Writes the row order (rows of a leaf are contiguous) into ``order`` and the
    ``[start, stop)`` of each leaf into ``leaf_bounds``; returns the number of leaves.
    """
    n, n_features = data.shape
    for i in range(n):
        order[i] = i
    stack_start = np.empty(128, dtype=np.int64)
    stack_stop = np.empty(128, dtype=np.int64)
    stack_start[0] = 0
    stack_stop[0] = n
    depth = 1
    n_leaves = 0
    node = 0
    side = np.empty(n, dtype=np.int8)
    normal = np.empty(n_features, dtype=np.float32)
    while depth > 0:
        depth -= 1
        start = stack_start[depth]
        stop = stack_stop[depth]
        size = stop - start
        node += 1
        if size <= leaf_size or depth >= 126:
            leaf_bounds[n_leaves, 0] = start
            leaf_bounds[n_leaves, 1] = stop
            n_leaves += 1
            continue
        state = stream_state(seed, np.uint64(tree), np.uint64(node))
        left = order[start + bounded_index(state, size)]
        state = next_state(state)
        right = order[start + bounded_index(state, size - 1)]
        if right == left:
            right = order[stop - 1]
        offset = np.float32(0.0)
        for f in range(n_features):
            normal[f] = data[left, f] - data[right, f]
            offset += normal[f] * (data[left, f] + data[right, f]) * np.float32(0.5)
        n_left = 0
        for i in range(start, stop):
            margin = -offset
            for f in range(n_features):
                margin += normal[f] * data[order[i], f]
            if margin == 0.0:
                state = next_state(state)
                side[i] = np.int8(bounded_index(state, 2))
            else:
                side[i] = np.int8(1 if margin > 0 else 0)
            n_left += side[i]
        if n_left == 0 or n_left == size:
            # Every row fell on one side (duplicates, or a degenerate plane): split in half.
            for i in range(start, stop):
                side[i] = np.int8(1 if i - start < size // 2 else 0)
            n_left = size // 2
        # Stable partition: rows with side 1 first.
        buffer = order[start:stop].copy()
        sides = side[start:stop].copy()
        write = start
        for i in range(size):
            if sides[i] == 1:
                order[write] = buffer[i]
                write += 1
        for i in range(size):
            if sides[i] == 0:
                order[write] = buffer[i]
                write += 1
        stack_start[depth] = start + n_left
        stack_stop[depth] = stop
        depth += 1
        stack_start[depth] = start
        stack_stop[depth] = start + n_left
        depth += 1
    return n_leaves


@numba.njit(cache=True, parallel=True)
def build_forest(data, seed, n_trees, leaf_size, orders, leaf_of_point, leaf_starts, leaf_stops):
    """Build ``n_trees`` trees in parallel; fill each point's leaf and the leaf bounds."""
    n = data.shape[0]
    for tree in numba.prange(n_trees):
        bounds = np.empty((n, 2), dtype=np.int64)
        n_leaves = _build_tree(data, seed, tree, leaf_size, orders[tree], bounds)
        for leaf in range(n_leaves):
            leaf_starts[tree, leaf] = bounds[leaf, 0]
            leaf_stops[tree, leaf] = bounds[leaf, 1]
            for i in range(bounds[leaf, 0], bounds[leaf, 1]):
                leaf_of_point[tree, orders[tree, i]] = leaf


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def leaf_candidates(
    data, orders, leaf_of_point, leaf_starts, leaf_stops, metric_code, out_values, out_labels
):
    """Fill each point's sorted row with the closest rows sharing a leaf in any tree."""
    n = data.shape[0]
    n_trees = orders.shape[0]
    for p in numba.prange(n):
        values = out_values[p]
        labels = out_labels[p]
        values[:] = np.inf
        labels[:] = -1
        values[0] = np.float32(-1.0)
        labels[0] = p
        for tree in range(n_trees):
            leaf = leaf_of_point[tree, p]
            for i in range(leaf_starts[tree, leaf], leaf_stops[tree, leaf]):
                q = orders[tree, i]
                if q == p:
                    continue
                _heap_push(values, labels, _distance(data, p, q, metric_code), q)


@numba.njit(cache=True, inline="always")
def _flagged_push(values, labels, flags, value, label):
    """As :func:`_heap_push`, and mark the inserted entry as new in ``flags``."""
    k = values.shape[0]
    last = k - 1
    if value > values[last] or (value == values[last] and label >= labels[last]):
        return 0
    for j in range(k):
        if labels[j] == label:
            return 0
    position = last
    while position > 0 and (
        values[position - 1] > value
        or (values[position - 1] == value and labels[position - 1] > label)
    ):
        values[position] = values[position - 1]
        labels[position] = labels[position - 1]
        flags[position] = flags[position - 1]
        position -= 1
    values[position] = value
    labels[position] = label
    flags[position] = 1
    return 1


@numba.njit(cache=True)
def reverse_lists(labels, flags, reverse_indptr, reverse_rows, reverse_new):
    """Fill the reverse neighbour lists of a kNN table by counting sort.

    Point ``q`` lists, in increasing order, the rows ``p`` whose columns ``1..k-1``
    contain ``q``, each with that entry's new-flag. Negative labels (empty slots) are
    skipped.
    ``reverse_indptr`` has ``n + 1`` entries; ``reverse_rows`` and ``reverse_new`` are
    filled up to ``reverse_indptr[n]``. Sorting the flat table in Python instead took a
    quarter of the whole search.
    """
    n, k = labels.shape
    reverse_indptr[:] = 0
    for p in range(n):
        for j in range(1, k):
            q = labels[p, j]
            if q >= 0:
                reverse_indptr[q + 1] += 1
    for q in range(n):
        reverse_indptr[q + 1] += reverse_indptr[q]
    fill = reverse_indptr[:-1].copy()
    for p in range(n):
        for j in range(1, k):
            q = labels[p, j]
            if q >= 0:
                slot = fill[q]
                reverse_rows[slot] = p
                reverse_new[slot] = flags[p, j]
                fill[q] = slot + 1


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def descent_round(
    data,
    metric_code,
    old_values,
    old_labels,
    old_flags,
    reverse_indptr,
    reverse_rows,
    reverse_new,
    max_reverse,
    max_expand,
    new_values,
    new_labels,
    new_flags,
    changed,
):
    """One round of neighbour descent, writing ``new_*`` rows and ``changed`` counts.

    Point ``p`` starts from its previous row and tries the neighbours ``r`` of its
    neighbours ``q``, and up to ``max_reverse`` reverse neighbours (points that list
    ``p``) with their neighbours. As in NN-descent, a pair is tried only when ``q`` is
    new in ``p``'s row or ``r`` is new in ``q``'s row: older pairs were tried before.
    Only the ``max_expand`` closest neighbours ``q`` are expanded.
    """
    n, k = old_labels.shape
    for p in numba.prange(n):
        values = new_values[p]
        labels = new_labels[p]
        flags = new_flags[p]
        for j in range(k):
            values[j] = old_values[p, j]
            labels[j] = old_labels[p, j]
            flags[j] = 0
        count = 0
        for j in range(1, min(k, max_expand + 1)):
            q = old_labels[p, j]
            if q < 0:
                continue
            q_is_new = old_flags[p, j] == 1
            for m in range(1, k):
                r = old_labels[q, m]
                if r < 0 or r == p or not (q_is_new or old_flags[q, m] == 1):
                    continue
                count += _flagged_push(values, labels, flags, _distance(data, p, r, metric_code), r)
        stop = min(reverse_indptr[p + 1], reverse_indptr[p] + max_reverse)
        for e in range(reverse_indptr[p], stop):
            q = reverse_rows[e]
            if q == p:
                continue
            q_is_new = reverse_new[e] == 1
            if q_is_new:
                count += _flagged_push(values, labels, flags, _distance(data, p, q, metric_code), q)
            for m in range(1, k):
                r = old_labels[q, m]
                if r < 0 or r == p or not (q_is_new or old_flags[q, m] == 1):
                    continue
                count += _flagged_push(values, labels, flags, _distance(data, p, r, metric_code), r)
        changed[p] = count


@numba.njit(cache=True, inline="always")
def _visit(table, label):
    """Insert ``label`` into an open-addressing set; return False if it was present."""
    mask = table.shape[0] - 1
    slot = (label * 2654435761) & mask
    while table[slot] != -1:
        if table[slot] == label:
            return False
        slot = (slot + 1) & mask
    table[slot] = label
    return True


@numba.njit(cache=True, inline="always")
def _pool_push(values, labels, expanded, value, label):
    """Insert into a sorted pool (ascending), marking the new entry unexpanded."""
    last = values.shape[0] - 1
    if value >= values[last]:
        return
    position = last
    while position > 0 and values[position - 1] > value:
        values[position] = values[position - 1]
        labels[position] = labels[position - 1]
        expanded[position] = expanded[position - 1]
        position -= 1
    values[position] = value
    labels[position] = label
    expanded[position] = False


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def graph_query(
    queries,
    data,
    knn_indices,
    landmarks,
    n_seeds,
    pool_size,
    metric_code,
    out_indices,
    out_distances,
):
    """Find neighbours of each query among ``data`` by best-first search on its kNN graph.

    Each query compares itself with every landmark row, starts from the ``n_seeds``
    closest, and repeatedly expands the closest unexpanded row of a pool of
    ``pool_size`` candidates through ``knn_indices`` until every pooled row is
    expanded. Queries are independent, so a query's result does not depend on the
    other queries. Distances are euclidean (``metric_code`` 0) or manhattan (1).
    """
    n_queries, n_features = queries.shape
    k = out_indices.shape[1]
    n_landmarks = landmarks.shape[0]
    table_size = 1
    while table_size < 8 * pool_size * (knn_indices.shape[1] + 1) + 4 * n_seeds:
        table_size *= 2
    for q in numba.prange(n_queries):
        table = np.full(table_size, -1, dtype=np.int64)
        visited = 0
        values = np.full(pool_size, np.inf, dtype=np.float32)
        labels = np.full(pool_size, -1, dtype=np.int64)
        expanded = np.ones(pool_size, dtype=np.bool_)
        seed_values = np.full(n_seeds, np.inf, dtype=np.float32)
        seed_labels = np.full(n_seeds, -1, dtype=np.int64)
        for s in range(n_landmarks):
            row = landmarks[s]
            total = np.float32(0.0)
            for f in range(n_features):
                diff = queries[q, f] - data[row, f]
                total += diff * diff if metric_code == 0 else abs(diff)
            if total < seed_values[n_seeds - 1]:
                position = n_seeds - 1
                while position > 0 and seed_values[position - 1] > total:
                    seed_values[position] = seed_values[position - 1]
                    seed_labels[position] = seed_labels[position - 1]
                    position -= 1
                seed_values[position] = total
                seed_labels[position] = row
        for s in range(n_seeds):
            if seed_labels[s] >= 0 and _visit(table, seed_labels[s]):
                visited += 1
                _pool_push(values, labels, expanded, seed_values[s], seed_labels[s])
        while True:
            current = -1
            for j in range(pool_size):
                if not expanded[j]:
                    current = j
                    break
            if current < 0 or 2 * visited > table_size:
                break
            expanded[current] = True
            node = labels[current]
            for m in range(knn_indices.shape[1]):
                candidate = knn_indices[node, m]
                if candidate < 0 or not _visit(table, candidate):
                    continue
                visited += 1
                total = np.float32(0.0)
                for f in range(n_features):
                    diff = queries[q, f] - data[candidate, f]
                    total += diff * diff if metric_code == 0 else abs(diff)
                _pool_push(values, labels, expanded, total, candidate)
        for j in range(k):
            out_indices[q, j] = labels[j]
            value = values[j]
            out_distances[q, j] = np.sqrt(value) if metric_code == 0 else value
