"""numba kernels of the UMAP layout: per-vertex SGD epochs on the fuzzy graph.

Symbols: ``a`` and ``b`` shape the low-dimensional similarity ``q(d) = 1 / (1 + a d^(2b))``;
``gamma`` is the repulsion strength; ``d2`` is a squared distance in the embedding.

One epoch visits every head vertex in parallel. A vertex moves only itself: its current
position starts from the ``previous`` buffer, it is pulled by its due edges and pushed by
negative samples whose positions are read from ``previous`` too, and the result goes to
``current``. No thread reads what another writes within an epoch, and each vertex draws
its negatives from a stream keyed on ``(seed, vertex key, epoch)``, so the output does
not depend on thread count or scheduling.
"""

from __future__ import annotations

import numba
import numpy as np

from latentlens.umap._fastmath import FAST_FLAGS, fast_exp2, fast_log2, fast_pow
from latentlens.umap._rng import bounded_index, next_state, stream_state

# Every coordinate of a single gradient step is clipped to this magnitude, as UMAP does,
# so that points at near-zero distance cannot be thrown across the map.
GRADIENT_CLIP = 4.0
# Added to d2 in the repulsive term so that coincident points get a finite push.
REPULSION_EPSILON = 0.001


@numba.njit(cache=True, fastmath=FAST_FLAGS, inline="always")
def attractive_coefficient(d2, a, b):
    """Scalar ``c`` such that the gradient of ``log(1 + a d^(2b))`` w.r.t. ``y_i`` is
    ``-c (y_i - y_j)``: ``c = -2 a b d^(2(b-1)) / (1 + a d^(2b))``; 0 at ``d2 = 0``."""
    if d2 <= 0.0:
        return np.float32(0.0)
    log_d2 = fast_log2(d2)
    power = fast_exp2(b * log_d2)
    power_less_one = fast_exp2((b - np.float32(1.0)) * log_d2)
    return np.float32(-2.0) * a * b * power_less_one / (np.float32(1.0) + a * power)


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
    a,
    b,
    gamma,
    attraction_scale,
    self_is_tail,
):
    """Move head ``i`` for one epoch: pulls by its due edges, pushes by negative samples."""
    dim = current.shape[1]
    n_tails = tail.shape[0]
    clip_value = np.float32(GRADIENT_CLIP)
    # The head's working position lives in its own output row: no other thread reads it.
    position = current[i]
    push = scratch[i]
    for c in range(dim):
        position[c] = previous[i, c]
    attract_step = np.float32(attraction_scale * alpha)
    repel_step = np.float32(alpha)
    state = stream_state(seed, vertex_keys[i], np.uint64(epoch))
    for e in range(indptr[i], indptr[i + 1]):
        if epoch_of_next_sample[e] > epoch:
            continue
        j = tails[e]
        d2 = np.float32(0.0)
        for c in range(dim):
            diff = position[c] - tail[j, c]
            d2 += diff * diff
        coefficient = np.float32(attractive_coefficient(d2, a, b))
        if coefficient != 0.0:
            for c in range(dim):
                step = coefficient * (position[c] - tail[j, c])
                step = min(max(step, -clip_value), clip_value)
                position[c] += attract_step * step
        epoch_of_next_sample[e] += epochs_per_sample[e]

        n_negative = int((epoch - epoch_of_next_negative_sample[e]) / epochs_per_negative_sample[e])
        # The negative samples of one edge all push from the same position and their
        # clipped steps are summed: the samples are independent of each other, so the
        # CPU overlaps them instead of waiting on one long chain of dependent updates.
        for c in range(dim):
            push[c] = 0.0
        for _ in range(n_negative):
            state = next_state(state)
            k = bounded_index(state, n_tails)
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
        for c in range(dim):
            position[c] += repel_step * push[c]
        epoch_of_next_negative_sample[e] += n_negative * epochs_per_negative_sample[e]


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
    scratch : float32 (n_heads, dim)
        Per-vertex buffer for the summed negative-sample steps.
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
            a,
            b,
            gamma,
            attraction_scale,
            self_is_tail,
        )


@numba.njit(cache=True, fastmath=FAST_FLAGS)
def sgd_epochs_serial(
    positions,
    spare,
    scratch,
    fixed_tail,
    indptr,
    tails,
    epochs_per_sample,
    epoch_of_next_sample,
    epochs_per_negative_sample,
    epoch_of_next_negative_sample,
    vertex_keys,
    seed,
    first_epoch,
    stop_epoch,
    n_epochs,
    initial_alpha,
    a,
    b,
    gamma,
    attraction_scale,
    use_fixed_tail,
):
    """Run epochs ``[first_epoch, stop_epoch)`` on one thread; same result as
    :func:`sgd_epoch` epoch by epoch, without a parallel launch per epoch (which costs
    milliseconds on a busy machine and dominates small graphs).

    ``positions`` holds the input and receives the output; ``spare`` is scratch of the
    same shape. The other arguments are as in :func:`sgd_epoch`.
    """
    previous = positions
    current = spare
    for epoch in range(first_epoch, stop_epoch):
        alpha = initial_alpha * (1.0 - epoch / n_epochs)
        tail = fixed_tail if use_fixed_tail else previous
        for i in range(current.shape[0]):
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
                a,
                b,
                gamma,
                attraction_scale,
                not use_fixed_tail,
            )
        previous, current = current, previous
    if (stop_epoch - first_epoch) % 2 == 1:
        positions[:] = spare


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
