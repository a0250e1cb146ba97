"""Two-sample drift tests between a reference window and a current window of activations."""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from latentlens.scores import _mmd
from latentlens.scores._validation import (
    check_choice,
    check_int,
    check_matrix,
    check_probability,
    check_same_features,
    make_rng,
)

logger = logging.getLogger(__name__)

DRIFT_METHODS = ("mmd", "mmd_exact", "ks")

# Pooled rows above which method="mmd_exact" is refused: its kernel takes 8 * N^2 bytes
# (200 MB at 5,000 rows) and each permutation costs O(N^2).
MAX_EXACT_ROWS = 5000


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one two-sample drift test.

    Attributes
    ----------
    statistic : float
        ``"mmd"``: squared MMD estimated with random Fourier features (biased form) in the
        (whitened by default) PCA space. ``"mmd_exact"``: unbiased MMD^2 from the full kernel
        in the same space.
        ``"ks"``: the Kolmogorov-Smirnov distance of the component with the smallest p-value.
    p_value : float
        Permutation p-value ``(1 + k) / (1 + B)`` for the MMD methods; Bonferroni-adjusted
        minimum of the per-component KS p-values for ``"ks"``.
    method : str
        ``"mmd"``, ``"mmd_exact"`` or ``"ks"``.
    n_reference, n_current : int
        Rows in each window.
    effect_size : float
        Euclidean distance between the window means in the original feature space, in the
        units of the input features (not standardised, not in PCA space).
    alpha : float
        Significance level that ``drift`` compares against.
    n_components : int
        PCA components the test ran on, after dropping components without spread.
    n_permutations : int or None
        ``B`` for the MMD methods, None for ``"ks"``.
    bandwidth : float or None
        Gaussian kernel bandwidth ``sigma`` for the MMD methods, in the units of the (whitened
        by default) PCA coordinates; None for ``"ks"``.
    component_p_values : tuple of float
        Unadjusted KS p-value per component for ``"ks"``; empty otherwise.
    """

    statistic: float
    p_value: float
    method: str
    n_reference: int
    n_current: int
    effect_size: float
    alpha: float
    n_components: int
    n_permutations: int | None = None
    bandwidth: float | None = None
    component_p_values: tuple[float, ...] = field(default_factory=tuple)

    @property
    def drift(self) -> bool:
        """Whether the test rejects "no drift" at level ``alpha`` (``p_value < alpha``)."""
        return self.p_value < self.alpha

    def to_dict(self) -> dict:
        """Return the fields and ``drift`` as plain Python values (JSON-serialisable)."""
        values = asdict(self)
        values["component_p_values"] = list(self.component_p_values)
        values["drift"] = self.drift
        return values


def drift_test(
    reference,
    current,
    *,
    method: str = "mmd",
    alpha: float = 0.05,
    n_permutations: int = 200,
    n_components: int = 32,
    n_features: int = 512,
    bandwidth: float | None = None,
    whiten: bool = True,
    random_state=None,
) -> DriftResult:
    """Test whether ``current`` comes from the same distribution as ``reference``.

    Both windows are projected onto a PCA fitted on the two windows pooled together. Components
    without spread are dropped, and by default the others are scaled to unit pooled variance.
    The projected windows are then compared with one of three tests:

    - ``"mmd"`` (default): maximum mean discrepancy with a Gaussian kernel, approximated by
      ``n_features`` random Fourier features so the cost is linear in the number of rows, and
      a permutation p-value ``(1 + k) / (1 + B)`` where ``k`` counts the ``B`` permutations
      whose statistic reaches the observed one.
    - ``"mmd_exact"``: the same test on the full kernel matrix with the unbiased MMD^2; for at
      most 5,000 pooled rows.
    - ``"ks"``: a two-sided Kolmogorov-Smirnov test per component, Bonferroni-corrected.

    Parameters
    ----------
    reference : array-like of shape (n, d)
        Reference window (for example training-set activations). At least 2 rows.
    current : array-like of shape (m, d)
        Window to test. At least 2 rows, same ``d``.
    method : {"mmd", "mmd_exact", "ks"}, default="mmd"
    alpha : float, default=0.05
        Significance level for ``DriftResult.drift``; it does not change the p-value.
    n_permutations : int, default=200
        ``B`` for the MMD methods. The smallest reachable p-value is ``1 / (B + 1)``.
    n_components : int, default=32
        PCA components; capped at ``min(d, n + m - 1)``. Components whose pooled variance is
        below 1e-9 times the largest are dropped.
    n_features : int, default=512
        Random Fourier features for ``"mmd"``; an even number >= 2. More features lower the
        variance of the statistic (more power), at linear cost.
    bandwidth : float, optional
        Gaussian kernel bandwidth ``sigma`` in the space the kernel sees (PCA coordinates,
        whitened by default). By default the median pairwise distance between reference rows
        in that space (the median heuristic).
    whiten : bool, default=True
        Scale each PCA component to unit pooled variance before the kernel, so a shift along a
        low-variance direction weighs as much as one along the top component. Without it the
        kernel is dominated by the few largest components. The KS test is unaffected (it is
        invariant to scaling).
    random_state : None, int or numpy.random.Generator, optional
        Seeds the PCA row sample, the Fourier features and the permutations.

    Returns
    -------
    DriftResult

    Raises
    ------
    TypeError
        If an array is not numeric or a setting has the wrong type.
    ValueError
        If an array is not 2-D, has fewer than 2 rows or non-finite values, the widths differ,
        a setting is out of range, or ``"mmd_exact"`` gets more than 5,000 pooled rows.

    Notes
    -----
    Fitting the PCA on the reference alone would make reference rows look closer to the
    projection than current rows and inflate false alarms. The pooled fit, the dropping of flat
    components and the whitening are symmetric functions of all rows, so permuting the window
    labels leaves them unchanged and the permutation test keeps its level. The default
    bandwidth depends on the reference rows only, as when a detector is fitted once on its
    reference, and the permutations keep it fixed. This breaks the exact symmetry slightly, so
    the false-alarm rate is measured instead of assumed: the calibration tests hold it within
    [0.02, 0.08] at alpha = 0.05 for several distribution shapes and sizes from 50 to 5,000.

    Cost is linear in the rows: about 0.27 s of CPU for two 10,000 x 768 float32 windows with
    the defaults on one BLAS thread (``benchmarks/scores.py``, shared 2-core VM). When the
    cores are busy with other work, for example inside a training loop, multi-threaded
    OpenBLAS spin-waits: the same call took 5 to 8 s there with 2 BLAS threads. Wrapping the
    call in ``threadpoolctl.threadpool_limits(1, user_api="blas")`` avoids that.

    Examples
    --------
    >>> import numpy as np
    >>> from latentlens.scores import drift_test
    >>> rng = np.random.default_rng(0)
    >>> reference = rng.normal(size=(500, 16))
    >>> shifted = rng.normal(loc=0.3, size=(500, 16))
    >>> drift_test(reference, shifted, random_state=0).drift
    True
    >>> drift_test(reference, rng.normal(size=(500, 16)), random_state=0).p_value > 0.05
    True
    """
    reference = check_matrix("reference", reference, min_rows=2)
    current = check_matrix("current", current, min_rows=2)
    check_same_features("reference", reference, "current", current)
    alpha = check_probability("alpha", alpha)
    method, n_permutations, n_components, n_features, bandwidth, whiten = check_test_options(
        method=method,
        n_permutations=n_permutations,
        n_components=n_components,
        n_features=n_features,
        bandwidth=bandwidth,
        whiten=whiten,
    )
    n_pooled = reference.shape[0] + current.shape[0]
    if method == "mmd_exact" and n_pooled > MAX_EXACT_ROWS:
        raise ValueError(
            f"method='mmd_exact' builds an N x N kernel and accepts at most {MAX_EXACT_ROWS} "
            f"pooled rows; got {n_pooled}. Use method='mmd' or subsample both windows."
        )
    rng = make_rng(random_state)

    effect_size = float(
        np.linalg.norm(
            reference.mean(axis=0, dtype=np.float64) - current.mean(axis=0, dtype=np.float64)
        )
    )
    pooled = np.concatenate([reference, current])
    mean, components = _mmd.fit_pooled_pca(pooled, n_components, rng)
    coordinates = _mmd.project(pooled, mean, components)
    coordinates = _mmd.drop_flat_components(coordinates, whiten=whiten)
    n_reference = reference.shape[0]
    common = {
        "method": method,
        "n_reference": n_reference,
        "n_current": current.shape[0],
        "effect_size": effect_size,
        "alpha": alpha,
        "n_components": coordinates.shape[1],
    }

    if method == "ks":
        return _ks_test(coordinates, n_reference, common)

    if bandwidth is None:
        bandwidth = _mmd.median_bandwidth(coordinates[:n_reference], rng)
    weights = _mmd.permutation_weights(n_reference, current.shape[0], n_permutations, rng)
    if method == "mmd":
        features = _mmd.random_fourier_features(coordinates, bandwidth, n_features, rng)
        statistics = _mmd.rff_mmd_statistics(features, weights)
    else:
        statistics = _mmd.exact_mmd_statistics(coordinates, bandwidth, n_reference, weights)
    p_value = _mmd.permutation_p_value(statistics)
    logger.debug(
        "drift_test %s: n=%d m=%d k=%d sigma=%.4g statistic=%.4g p=%.4g",
        method,
        n_reference,
        current.shape[0],
        coordinates.shape[1],
        bandwidth,
        statistics[0],
        p_value,
    )
    return DriftResult(
        statistic=float(statistics[0]),
        p_value=p_value,
        n_permutations=n_permutations,
        bandwidth=bandwidth,
        **common,
    )


# Settings of drift_test that per_class_drift passes through.
TEST_OPTIONS = ("method", "n_permutations", "n_components", "n_features", "bandwidth", "whiten")


def check_test_options(
    *,
    method: str = "mmd",
    n_permutations: int = 200,
    n_components: int = 32,
    n_features: int = 512,
    bandwidth: float | None = None,
    whiten: bool = True,
) -> tuple[str, int, int, int, float | None, bool]:
    """Validate the settings of :func:`drift_test` and return them normalised, or raise."""
    method = check_choice("method", method, DRIFT_METHODS)
    n_permutations = check_int("n_permutations", n_permutations, minimum=1)
    n_components = check_int("n_components", n_components, minimum=1)
    n_features = check_int("n_features", n_features, minimum=2)
    if n_features % 2:
        raise ValueError(
            f"n_features must be even (one cosine and one sine per frequency); got {n_features}. "
            f"Use {n_features + 1}."
        )
    if bandwidth is not None:
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real):
            raise TypeError(f"bandwidth must be a positive float or None; got {bandwidth!r}.")
        if not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(
                f"bandwidth must be a positive finite float or None; got {bandwidth!r}. "
                "Pass None for the median heuristic."
            )
        bandwidth = float(bandwidth)
    if not isinstance(whiten, (bool, np.bool_)):
        raise TypeError(f"whiten must be True or False; got {whiten!r}.")
    return method, n_permutations, n_components, n_features, bandwidth, bool(whiten)


def _ks_test(coordinates: np.ndarray, n_reference: int, common: dict) -> DriftResult:
    """Run a KS test per PCA component and combine them with a Bonferroni correction."""
    if coordinates.shape[1] == 0:
        # Every row is identical: nothing can differ between the windows.
        return DriftResult(statistic=0.0, p_value=1.0, **common)
    result = stats.ks_2samp(coordinates[:n_reference], coordinates[n_reference:], axis=0)
    component_p_values = np.atleast_1d(result.pvalue).astype(np.float64)
    distances = np.atleast_1d(result.statistic).astype(np.float64)
    best = int(np.argmin(component_p_values))
    p_value = min(1.0, component_p_values.size * float(component_p_values[best]))
    return DriftResult(
        statistic=float(distances[best]),
        p_value=p_value,
        component_p_values=tuple(float(p) for p in component_p_values),
        **common,
    )
