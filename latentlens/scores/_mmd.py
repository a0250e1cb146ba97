"""Numeric building blocks of the drift tests: pooled PCA, bandwidth, kernel features, permutations.

Symbols used below: ``n`` and ``m`` are the reference and current sizes, and ``N = n + m``.
``d`` is the input width, ``k`` the number of PCA components, ``D`` the number of random Fourier
features and ``B`` the number of permutations. ``sigma`` is the Gaussian kernel bandwidth, with
``kernel(x, y) = exp(-||x - y||^2 / (2 sigma^2))``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist

# Rows of the pooled sample used to estimate the PCA covariance. A random subset chosen without
# looking at which window a row came from keeps the permutation test exact. It costs power only
# when the drift lives in directions that 4,000 rows cannot resolve.
PCA_SAMPLE_ROWS = 4000

# Relative pooled variance below which a PCA component is treated as flat and dropped.
FLAT_VARIANCE_RTOL = 1e-9

# Pairs of reference rows whose median distance sets the kernel bandwidth (all pairs up to
# 200 rows).
MAX_BANDWIDTH_PAIRS = 20_000

# Above this width the top components come from randomized subspace iteration on the
# covariance instead of a full eigendecomposition, which costs O(d^3).
FULL_EIGH_MAX_WIDTH = 256
SUBSPACE_OVERSAMPLING = 16
SUBSPACE_ITERATIONS = 7


def fit_pooled_pca(
    pooled: np.ndarray, n_components: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a PCA on rows of the pooled sample, ignoring which window each row came from.

    Parameters
    ----------
    pooled : ndarray of shape (N, d)
        Reference rows followed by current rows.
    n_components : int
        Requested ``k``; at most ``min(d, N - 1)`` components are returned.
    rng : numpy.random.Generator
        Draws the row subset and the start of the subspace iteration.

    Returns
    -------
    mean : ndarray of shape (d,), float64
        Pooled mean.
    components : ndarray of shape (d, k), float64
        Orthonormal principal directions, largest variance first.
    """
    n_rows, width = pooled.shape
    mean = pooled.mean(axis=0, dtype=np.float64)

    # float32 input gets a float32 covariance product (half the cost of float64); its relative
    # error of about 1e-6 does not change which directions lead.
    if n_rows > PCA_SAMPLE_ROWS:
        sample = pooled[rng.choice(n_rows, size=PCA_SAMPLE_ROWS, replace=False)]
    else:
        sample = pooled
    sample = sample - mean.astype(pooled.dtype)
    covariance = (sample.T @ sample).astype(np.float64) / max(sample.shape[0] - 1, 1)

    k = min(n_components, width, n_rows - 1)
    if width <= FULL_EIGH_MAX_WIDTH or k + SUBSPACE_OVERSAMPLING >= width:
        _, vectors = np.linalg.eigh(covariance)
        return mean, vectors[:, ::-1][:, :k].copy()

    # Randomized subspace iteration (Halko, Martinsson and Tropp 2011, algorithm 4.4) on the
    # symmetric covariance, followed by a Rayleigh-Ritz step on the small projected matrix.
    basis = rng.standard_normal((width, k + SUBSPACE_OVERSAMPLING))
    for _ in range(SUBSPACE_ITERATIONS):
        basis, _ = np.linalg.qr(covariance @ basis)
    projected = basis.T @ covariance @ basis
    _, small_vectors = np.linalg.eigh(projected)
    components = basis @ small_vectors[:, ::-1][:, :k]
    return mean, components


def project(rows: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Return ``(rows - mean) @ components`` as float64, shape (len(rows), k)."""
    dtype = rows.dtype if rows.dtype == np.float32 else np.float64
    shift = mean @ components
    return (rows @ components.astype(dtype)).astype(np.float64) - shift


def drop_flat_components(coordinates: np.ndarray, whiten: bool) -> np.ndarray:
    """Drop components with no pooled spread, and optionally scale the rest to unit variance.

    A component counts as flat when its pooled variance is at most ``FLAT_VARIANCE_RTOL`` times
    the largest one (for example directions of dead ReLU units, or beyond the rank of the data);
    whitening would otherwise blow rounding noise up to unit variance. Both steps depend only on
    the pooled rows, so they keep the permutation test exact.

    Returns
    -------
    ndarray of shape (N, k_used), float64
    """
    variances = coordinates.var(axis=0)
    largest = variances.max(initial=0.0)
    keep = variances > FLAT_VARIANCE_RTOL * largest
    coordinates = coordinates[:, keep]
    if whiten:
        coordinates = coordinates / np.sqrt(variances[keep])
    return coordinates


def median_bandwidth(rows: np.ndarray, rng: np.random.Generator) -> float:
    """Return the median pairwise Euclidean distance between rows (the median heuristic).

    Uses every pair when there are at most ``MAX_BANDWIDTH_PAIRS`` of them, otherwise that many
    pairs of distinct rows drawn at random (the median of 20,000 draws is within about 1 % of
    the full one). Pairs of identical rows are left out; returns 1.0 when all rows coincide,
    so a constant input still gets a usable kernel.
    """
    n_rows = rows.shape[0]
    if n_rows * (n_rows - 1) // 2 <= MAX_BANDWIDTH_PAIRS:
        distances = pdist(rows)
    else:
        first = rng.integers(0, n_rows, size=MAX_BANDWIDTH_PAIRS)
        # An offset in [1, n) makes the second row differ from the first.
        second = (first + rng.integers(1, n_rows, size=MAX_BANDWIDTH_PAIRS)) % n_rows
        differences = rows[first] - rows[second]
        distances = np.sqrt(np.einsum("ij,ij->i", differences, differences))
    positive = distances[distances > 0]
    if positive.size == 0:
        return 1.0
    return float(np.median(positive))


def random_fourier_features(
    rows: np.ndarray, bandwidth: float, n_features: int, rng: np.random.Generator
) -> np.ndarray:
    """Map rows to ``D`` random Fourier features of the Gaussian kernel (Rahimi and Recht 2007).

    Uses ``D / 2`` frequencies ``w ~ N(0, I / sigma^2)`` with one cosine and one sine each, so
    ``phi(x) . phi(y)`` is an unbiased estimate of ``kernel(x, y)`` with lower variance than
    random phases (Sutherland and Schneider 2015).

    Returns
    -------
    ndarray of shape (len(rows), D), float32
    """
    n_frequencies = n_features // 2
    frequencies = rng.standard_normal((rows.shape[1], n_frequencies)) / bandwidth
    phases = (rows @ frequencies).astype(np.float32)
    scale = np.float32(1.0 / np.sqrt(n_frequencies))
    features = np.empty((rows.shape[0], 2 * n_frequencies), dtype=np.float32)
    np.cos(phases, out=features[:, :n_frequencies])
    np.sin(phases, out=features[:, n_frequencies:])
    features *= scale
    return features


def permutation_weights(
    n_reference: int, n_current: int, n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """Return ``B + 1`` rows of window weights, the observed split first.

    Row ``b`` holds ``+1/n`` at the rows that permutation ``b`` assigns to the reference and
    ``-1/m`` elsewhere, so ``weights @ features`` gives the difference of window means.

    Returns
    -------
    ndarray of shape (B + 1, N), float32
    """
    observed = np.concatenate(
        [
            np.full(n_reference, 1.0 / n_reference, dtype=np.float32),
            np.full(n_current, -1.0 / n_current, dtype=np.float32),
        ]
    )
    weights = np.empty((n_permutations + 1, observed.size), dtype=np.float32)
    weights[0] = observed
    weights[1:] = rng.permuted(np.broadcast_to(observed, (n_permutations, observed.size)), axis=1)
    return weights


def rff_mmd_statistics(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the squared RFF-MMD for each row of ``weights``, shape (B + 1,), float64.

    The squared norm of the difference of mean feature vectors; it estimates the biased (V)
    form of MMD^2 under the Gaussian kernel.
    """
    mean_differences = (weights @ features).astype(np.float64)
    return np.einsum("ij,ij->i", mean_differences, mean_differences)


def exact_mmd_statistics(
    rows: np.ndarray, bandwidth: float, n_reference: int, weights: np.ndarray
) -> np.ndarray:
    """Return the unbiased MMD^2 (Gretton et al. 2012, eq. 3) for each split in ``weights``.

    Builds the full ``N x N`` Gaussian kernel, so memory grows as ``8 N^2`` bytes.

    Parameters
    ----------
    rows : ndarray of shape (N, k)
    bandwidth : float
    n_reference : int
        ``n``; each row of ``weights`` marks ``n`` reference rows with a positive weight.
    weights : ndarray of shape (B + 1, N)
        As returned by :func:`permutation_weights`.

    Returns
    -------
    ndarray of shape (B + 1,), float64
    """
    n_rows = rows.shape[0]
    n_current = n_rows - n_reference
    squared_norms = np.einsum("ij,ij->i", rows, rows)
    squared_distances = squared_norms[:, None] + squared_norms[None, :] - 2.0 * (rows @ rows.T)
    np.maximum(squared_distances, 0.0, out=squared_distances)
    kernel = np.exp(squared_distances * (-0.5 / bandwidth**2), out=squared_distances)

    membership = (weights > 0).astype(np.float64)
    row_sums = kernel.sum(axis=1)
    total = row_sums.sum()
    within_reference = np.einsum("ij,ij->i", membership @ kernel, membership)
    reference_to_all = membership @ row_sums
    between = reference_to_all - within_reference
    within_current = total - 2.0 * reference_to_all + within_reference

    # The Gaussian kernel is 1 on the diagonal; the unbiased estimate leaves out i == j.
    return (
        (within_reference - n_reference) / (n_reference * (n_reference - 1))
        + (within_current - n_current) / (n_current * (n_current - 1))
        - 2.0 * between / (n_reference * n_current)
    )


def permutation_p_value(statistics: np.ndarray) -> float:
    """Return ``(1 + #{b >= 1 : T_b >= T_0}) / (1 + B)`` for ``statistics = [T_0, T_1..T_B]``.

    Counting the observed statistic among the permutations keeps the p-value valid (never 0),
    and makes ``P(p <= alpha) <= alpha`` hold exactly under exchangeability. A small relative
    tolerance counts float32 rounding ties as ties.
    """
    observed = statistics[0]
    tolerance = 1e-6 * abs(observed)
    exceed = int(np.count_nonzero(statistics[1:] >= observed - tolerance))
    return (1 + exceed) / statistics.size
