"""numba kernels of the UMAP layout: per-vertex SGD epochs on the fuzzy graph.

Symbols: ``a`` and ``b`` shape the low-dimensional similarity ``q(d) = 1 / (1 + a d^(2b))``;
``gamma`` is the repulsion strength; ``d2`` is a squared distance in the embedding.

One epoch visits every head vertex in parallel. A vertex moves only itself: its current
position starts from the ``previous`` buffer, it is pulled by its due edges and pushed by
negative samples whose positions are read from ``previous`` too, and the result goes to
``current``. No thread reads what another writes within an epoch, and the n-th negative
sample of a vertex in an epoch is a hash of ``(seed, vertex key, epoch, n)``, so the
output does not depend on thread count or scheduling.

For each due edge the pull and the pushes of its negative samples are all computed from
the head's position before that edge, then added. umap-learn applies the pull first and
computes the pushes from the moved point. Computing both from one point is the same
gradient step on the edge's terms, and it lets the CPU overlap them. The negative samples
are drawn by counter rather than from a sequential generator, so that blocks of them are
independent and the compiler evaluates them in SIMD lanes.
"""

from __future__ import annotations

import numba
import numpy as np

from latentlens.umap._fastmath import FAST_FLAGS, _bits_of, fast_pow
from latentlens.umap._rng import bounded_index, counter_draw, stream_state

# Negative samples are evaluated in blocks of this many lanes, one AVX-512 register of
# float32. Blocks of 4 and 16 were slower on 20,000 x 128 clusters.
NEGATIVE_BLOCK = 8

# Every coordinate of a single gradient step is clipped to this magnitude, as UMAP does,
# so that points at near-zero distance cannot be thrown across the map.
GRADIENT_CLIP = 4.0
# Added to d2 in the repulsive term so that coincident points get a finite push.
REPULSION_EPSILON = 0.001

# The attractive coefficient is read from a table over d2 in [2^-24, 2^16) with
# 2^TABLE_BITS nodes per octave. The node index is the top bits of d2's exponent and
# mantissa, and the remaining bits interpolate linearly. The relative error is below 1e-4
# (a test checks). The table replaces a power and a division, which took half of the time
# of the attraction steps because each step waits for the one before.
TABLE_BITS = 6
TABLE_SHIFT = 23 - TABLE_BITS
TABLE_FIRST_BITS = (127 - 24) << 23
TABLE_NODES = (40 << TABLE_BITS) + 1


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def attractive_coefficient(d2, a, b):
    """Scalar ``c`` such that the gradient of ``log(1 + a d^(2b))`` w.r.t. ``y_i`` is
    ``-c (y_i - y_j)``: ``c = -2 a b d^(2(b-1)) / (1 + a d^(2b))``; 0 at ``d2 = 0``."""
    if d2 <= 0.0:
        return np.float32(0.0)
    power = fast_pow(d2, b)
    return np.float32(-2.0) * a * b * power / (d2 * (np.float32(1.0) + a * power))


def attraction_table(a, b):
    """Compute the float32 table that :func:`tabled_attractive_coefficient` reads.

    The nodes are computed in float64 from the formula of :func:`attractive_coefficient`.
    """
    bits = TABLE_FIRST_BITS + (np.arange(TABLE_NODES, dtype=np.int64) << TABLE_SHIFT)
    d2 = bits.astype(np.int32).view(np.float32).astype(np.float64)
    return (-2.0 * a * b * d2 ** (b - 1.0) / (1.0 + a * d2**b)).astype(np.float32)


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def tabled_attractive_coefficient(d2, table, a, b):
    """Interpolate :func:`attractive_coefficient` linearly in ``table``.

    Outside the table's range the coefficient is computed directly.
    """
    offset = _bits_of(np.float32(d2)) - np.int32(TABLE_FIRST_BITS)
    node = offset >> np.int32(TABLE_SHIFT)
    if offset < 0 or node >= TABLE_NODES - 1:
        return np.float32(attractive_coefficient(d2, a, b))
    fraction = np.float32(offset & np.int32((1 << TABLE_SHIFT) - 1)) * np.float32(
        1.0 / (1 << TABLE_SHIFT)
    )
    low = table[node]
    return low + fraction * (table[node + 1] - low)


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def repulsive_coefficient(d2, a, b, gamma):
    """Scalar ``c`` such that ``c (y_i - y_k)`` is minus the gradient of
    ``-gamma log(1 - q)`` w.r.t. ``y_i``, with ``REPULSION_EPSILON`` added to ``d2``:
    ``c = 2 gamma b / ((eps + d2) (1 + a d^(2b)))``."""
    if d2 <= 0.0:
        return np.float32(0.0)
    power = fast_pow(d2, b)
    return (np.float32(2.0) * gamma * b) / (
        (np.float32(REPULSION_EPSILON) + d2) * (np.float32(1.0) + a * power)
    )


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def _update_vertex(
    i,
    current,
    scratch,
    previous,
    tail,
    indptr,
    tails,
    epochs_per_sample,
    epoch_of_next_sample,
    epochs_per_negative_sample,
    epoch_of_next_negative_sample,
    vertex_keys,
    seed,
    epoch,
    alpha,
    table,
    a,
    b,
    gamma,
    attraction_scale,
    self_is_tail,
):
    """Move head ``i`` for one epoch: pulls by its due edges, pushes by negative samples.

    ``scratch[i, 0]`` and ``scratch[i, 1]`` contain the pull and the summed pushes of the
    current edge. :func:`_update_pair_2d` is the same update for ``dim == 2``.
    """
    dim = current.shape[1]
    n_tails = tail.shape[0]
    clip_value = np.float32(GRADIENT_CLIP)
    # The head's working position lives in its own output row: no other thread reads it.
    position = current[i]
    pull = scratch[i, 0]
    push = scratch[i, 1]
    for c in range(dim):
        position[c] = previous[i, c]
    attract_step = np.float32(attraction_scale * alpha)
    repel_step = np.float32(alpha)
    state = stream_state(seed, vertex_keys[i], np.uint64(epoch))
    drawn = 0
    for e in range(indptr[i], indptr[i + 1]):
        if epoch_of_next_sample[e] > epoch:
            continue
        j = tails[e]
        d2 = np.float32(0.0)
        for c in range(dim):
            diff = position[c] - tail[j, c]
            d2 += diff * diff
        coefficient = tabled_attractive_coefficient(d2, table, a, b)
        for c in range(dim):
            step = coefficient * (position[c] - tail[j, c])
            pull[c] = attract_step * min(max(step, -clip_value), clip_value)
            push[c] = 0.0
        epoch_of_next_sample[e] += epochs_per_sample[e]

        n_negative = int((epoch - epoch_of_next_negative_sample[e]) / epochs_per_negative_sample[e])
        for n in range(n_negative):
            k = bounded_index(counter_draw(state, drawn + n), n_tails)
            if self_is_tail and k == i:
                continue
            d2 = np.float32(0.0)
            for c in range(dim):
                diff = position[c] - tail[k, c]
                d2 += diff * diff
            coefficient = np.float32(repulsive_coefficient(d2, a, b, gamma))
            for c in range(dim):
                step = coefficient * (position[c] - tail[k, c])
                push[c] += min(max(step, -clip_value), clip_value)
        drawn += n_negative
        for c in range(dim):
            position[c] += pull[c] + repel_step * push[c]
        epoch_of_next_negative_sample[e] += n_negative * epochs_per_negative_sample[e]


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def _edge_step_2d(
    i,
    e,
    x,
    y,
    state,
    drawn,
    tail,
    tails,
    epochs_per_sample,
    epoch_of_next_sample,
    epochs_per_negative_sample,
    epoch_of_next_negative_sample,
    epoch,
    attract_step,
    repel_step,
    table,
    a,
    b,
    gamma,
    self_is_tail,
):
    """Apply due edge ``e`` to head ``i`` at ``(x, y)``: its pull and the pushes of its
    negative samples, all computed from ``(x, y)``.

    Returns the moved point and the new draw count. The negative samples run in blocks
    of ``NEGATIVE_BLOCK`` lanes. Lanes past the edge's count, or equal to the head
    itself, contribute zero.
    """
    n_tails = tail.shape[0]
    clip_value = np.float32(GRADIENT_CLIP)
    j = tails[e]
    dx = x - tail[j, 0]
    dy = y - tail[j, 1]
    coefficient = tabled_attractive_coefficient(dx * dx + dy * dy, table, a, b)
    pull_x = attract_step * min(max(coefficient * dx, -clip_value), clip_value)
    pull_y = attract_step * min(max(coefficient * dy, -clip_value), clip_value)
    epoch_of_next_sample[e] += epochs_per_sample[e]

    n_negative = int((epoch - epoch_of_next_negative_sample[e]) / epochs_per_negative_sample[e])
    push_x = np.float32(0.0)
    push_y = np.float32(0.0)
    for block in range(0, n_negative, NEGATIVE_BLOCK):
        for lane in range(NEGATIVE_BLOCK):
            k = bounded_index(counter_draw(state, drawn + block + lane), n_tails)
            keep = np.float32(1.0)
            if block + lane >= n_negative or (self_is_tail and k == i):
                keep = np.float32(0.0)
                k = 0
            dx = x - tail[k, 0]
            dy = y - tail[k, 1]
            coefficient = keep * np.float32(repulsive_coefficient(dx * dx + dy * dy, a, b, gamma))
            push_x += min(max(coefficient * dx, -clip_value), clip_value)
            push_y += min(max(coefficient * dy, -clip_value), clip_value)
    epoch_of_next_negative_sample[e] += n_negative * epochs_per_negative_sample[e]
    return x + pull_x + repel_step * push_x, y + pull_y + repel_step * push_y, drawn + n_negative


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def _update_pair_2d(
    first,
    second,
    current,
    previous,
    tail,
    indptr,
    tails,
    due_edges,
    epochs_per_sample,
    epoch_of_next_sample,
    epochs_per_negative_sample,
    epoch_of_next_negative_sample,
    vertex_keys,
    seed,
    epoch,
    alpha,
    table,
    a,
    b,
    gamma,
    attraction_scale,
    self_is_tail,
):
    """Move heads ``first`` and ``second`` of a two-dimensional map for one epoch, as
    :func:`_update_vertex` does (``second`` is -1 when there is none).

    Each head's position is two local scalars. Written through ``current[i]``, it is
    stored and reloaded around every read of ``tail``, because the compiler cannot prove
    that ``tail`` is another array. Each edge step waits for the step before it, so
    stepping through two heads' edges side by side lets the CPU run one chain while the
    other waits.
    """
    attract_step = np.float32(attraction_scale * alpha)
    repel_step = np.float32(alpha)
    x1 = previous[first, 0]
    y1 = previous[first, 1]
    state1 = stream_state(seed, vertex_keys[first], np.uint64(epoch))
    drawn1 = 0
    e1 = indptr[first]
    stop1 = indptr[first + 1]
    x2 = np.float32(0.0)
    y2 = np.float32(0.0)
    state2 = state1
    drawn2 = 0
    e2 = 0
    stop2 = 0
    if second >= 0:
        x2 = previous[second, 0]
        y2 = previous[second, 1]
        state2 = stream_state(seed, vertex_keys[second], np.uint64(epoch))
        e2 = indptr[second]
        stop2 = indptr[second + 1]
    # The due edges of both heads are listed first, without branches, because a
    # mispredicted "is this edge due" branch discards the work in flight on both chains.
    count1 = 0
    for e in range(e1, stop1):
        due_edges[e1 + count1] = e
        count1 += epoch_of_next_sample[e] <= epoch
    count2 = 0
    for e in range(e2, stop2):
        due_edges[e2 + count2] = e
        count2 += epoch_of_next_sample[e] <= epoch
    for t in range(max(count1, count2)):
        if t < count1:
            x1, y1, drawn1 = _edge_step_2d(
                first,
                due_edges[e1 + t],
                x1,
                y1,
                state1,
                drawn1,
                tail,
                tails,
                epochs_per_sample,
                epoch_of_next_sample,
                epochs_per_negative_sample,
                epoch_of_next_negative_sample,
                epoch,
                attract_step,
                repel_step,
                table,
                a,
                b,
                gamma,
                self_is_tail,
            )
        if t < count2:
            x2, y2, drawn2 = _edge_step_2d(
                second,
                due_edges[e2 + t],
                x2,
                y2,
                state2,
                drawn2,
                tail,
                tails,
                epochs_per_sample,
                epoch_of_next_sample,
                epochs_per_negative_sample,
                epoch_of_next_negative_sample,
                epoch,
                attract_step,
                repel_step,
                table,
                a,
                b,
                gamma,
                self_is_tail,
            )
    current[first, 0] = x1
    current[first, 1] = y1
    if second >= 0:
        current[second, 0] = x2
        current[second, 1] = y2


# NOTE: the six schedule arrays are passed one by one through every kernel here. Packing
# them into a tuple (numba 0.68) made the layout stop reducing its loss and run 20 times
# slower, as if the in-place schedule updates were lost; the cause was not traced.
@numba.njit(cache=True, fastmath=FAST_FLAGS, parallel=True)
def sgd_epoch(
    current,
    scratch,
    previous,
    tail,
    indptr,
    tails,
    epochs_per_sample,
    epoch_of_next_sample,
    epochs_per_negative_sample,
    epoch_of_next_negative_sample,
    vertex_keys,
    seed,
    epoch,
    alpha,
    table,
    a,
    b,
    gamma,
    attraction_scale,
    self_is_tail,
):
    """Run one epoch for every head vertex, in parallel over heads.

    Parameters (arrays are C-contiguous):
    current, previous : float32 (n_heads, dim)
        Output and input positions of the head vertices.
    scratch : float32 (n_heads, 2, dim)
        Per-vertex buffers for the pull and the summed pushes.
    tail : float32 (n_tails, dim)
        Positions of edge tails and negative samples. In fit this is ``previous``
        itself, in transform the frozen training embedding.
    indptr, tails : int64 (n_heads + 1,), int32 (n_edges,)
        Edges of head ``i`` are ``tails[indptr[i]:indptr[i+1]]`` (CSR).
    epochs_per_sample, epoch_of_next_sample : float64 (n_edges,)
        Edge schedule: an edge is due when its next-sample epoch is <= ``epoch``.
    epochs_per_negative_sample, epoch_of_next_negative_sample : float64 (n_edges,)
        Negative-sample schedule per edge.
    vertex_keys : uint64 (n_heads,)
        Key of each head's random stream.
    table : float32 (TABLE_NODES,)
        Attractive coefficients from :func:`attraction_table` for these ``a`` and ``b``.
    attraction_scale : float
        2.0 in fit, where each undirected edge is stored in both rows and umap-learn's
        edge update moves both ends; 1.0 in transform.
    self_is_tail : bool
        True in fit, where a negative sample equal to the head itself is skipped.
    """
    for i in numba.prange(current.shape[0]):
        _update_vertex(
            i,
            current,
            scratch,
            previous,
            tail,
            indptr,
            tails,
            epochs_per_sample,
            epoch_of_next_sample,
            epochs_per_negative_sample,
            epoch_of_next_negative_sample,
            vertex_keys,
            seed,
            epoch,
            alpha,
            table,
            a,
            b,
            gamma,
            attraction_scale,
            self_is_tail,
        )


@numba.njit(cache=True, fastmath=FAST_FLAGS, parallel=True)
def sgd_epoch_2d(
    current,
    due_edges,
    previous,
    tail,
    indptr,
    tails,
    epochs_per_sample,
    epoch_of_next_sample,
    epochs_per_negative_sample,
    epoch_of_next_negative_sample,
    vertex_keys,
    seed,
    epoch,
    alpha,
    table,
    a,
    b,
    gamma,
    attraction_scale,
    self_is_tail,
):
    """Run one epoch of a two-dimensional map, as :func:`sgd_epoch`, two heads at a time.

    ``due_edges`` is an int32 buffer of ``n_edges`` entries that receives the due edges
    of each head in the head's own CSR range, in place of ``scratch``. The kernel is
    separate from :func:`sgd_epoch` so that numba compiles only the one a run needs,
    since each takes seconds.
    """
    n_heads = current.shape[0]
    for pair in numba.prange((n_heads + 1) // 2):
        second = 2 * pair + 1
        _update_pair_2d(
            2 * pair,
            second if second < n_heads else -1,
            current,
            previous,
            tail,
            indptr,
            tails,
            due_edges,
            epochs_per_sample,
            epoch_of_next_sample,
            epochs_per_negative_sample,
            epoch_of_next_negative_sample,
            vertex_keys,
            seed,
            epoch,
            alpha,
            table,
            a,
            b,
            gamma,
            attraction_scale,
            self_is_tail,
        )


@numba.njit(cache=True, parallel=True, fastmath=FAST_FLAGS)
def weighted_mean_init(indptr, tails, weights, tail_embedding, out):
    """Place each new point at the membership-weighted mean of its neighbours' positions.

    A point without neighbours (all weights zero) is placed at its nearest neighbour,
    which is ``tails[indptr[i]]`` when the row is non-empty, else at the origin.
    """
    n, dim = out.shape
    for i in numba.prange(n):
        total = 0.0
        for c in range(dim):
            out[i, c] = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            w = weights[e]
            total += w
            for c in range(dim):
                out[i, c] += w * tail_embedding[tails[e], c]
        if total > 0.0:
            for c in range(dim):
                out[i, c] /= total
        elif indptr[i + 1] > indptr[i]:
            for c in range(dim):
                out[i, c] = tail_embedding[tails[indptr[i]], c]
