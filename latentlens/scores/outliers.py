"""Per-row outlier scores against a reference, with conformal p-values."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

from latentlens.scores._validation import (
    check_choice,
    check_int,
    check_matrix,
    check_probability,
    check_same_features,
    make_rng,
)

logger = logging.getLogger(__name__)

OUTLIER_METHODS = ("knn", "lof")
OUTLIER_METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class OutlierScores:
    """Outlier scores and conformal p-values for the rows passed to :meth:`OutlierScorer.score`.

    Attributes
    ----------
    scores : ndarray of shape (n,), float64
        Larger means more unusual. ``"knn"``: distance to the k-th nearest bank row in the
        standardised space. ``"lof"``: local outlier factor (about 1 for inliers).
    p_values : ndarray of shape (n,), float64
        Conformal p-values ``(1 + #{calibration scores >= score}) / (n_calibration + 1)``.
    method : str
        ``"knn"`` or ``"lof"``.
    """

    scores: np.ndarray
    p_values: np.ndarray
    method: str

    def flags(self, alpha: float = 0.05) -> np.ndarray:
        """Return a boolean mask of rows with ``p_value <= alpha``.

        For a row exchangeable with the reference, ``P(p_value <= alpha) <= alpha``.
        """
        alpha = check_probability("alpha", alpha)
        return self.p_values <= alpha

    def __len__(self) -> int:
        return self.scores.shape[0]


class OutlierScorer:
    """Score how unusual rows are relative to a reference, with calibrated p-values.

    The reference rows are shuffled and split in two. New rows are compared with the bank (at
    most ``max_bank_size`` rows). The calibration rows are not in the bank, so they are scored
    exactly like new rows and give the null distribution of scores. A row's p-value is the
    share of calibration scores at least as large as its own (split conformal prediction), so
    rows drawn from the reference distribution get p-values that are uniform up to a step of
    ``1 / (n_calibration + 1)``.

    Parameters
    ----------
    reference : array-like of shape (n, d)
        Rows that define "usual", for example training-set activations.
    n_neighbors : int, default=10
        ``k``. The bank must hold more than ``k`` rows.
    method : {"knn", "lof"}, default="knn"
        ``"knn"``: distance to the k-th nearest bank row. ``"lof"``: scikit-learn's local
        outlier factor with ``novelty=True`` fitted on the bank.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance between rows. Cosine suits residual-stream activations with a few dimensions
        of very large magnitude.
    standardize : bool, default=True
        Centre and scale each feature with the bank's mean and standard deviation before
        computing distances (features with zero spread keep scale 1).
    max_bank_size : int, default=4000
        Cap on bank rows; a random subset is kept when the reference has more. Query cost is
        linear in the bank size.
    calibration_fraction : float, default=0.25
        Share of reference rows held out for calibration. Their number sets the p-value
        resolution: at least 19 are needed for any p-value to reach 0.05.
    random_state : None, int or numpy.random.Generator, default=0
        Seeds the split and the bank subsample.

    Attributes
    ----------
    bank_ : ndarray of shape (n_bank, d), float64
        Standardised bank rows.
    calibration_scores_ : ndarray of shape (n_calibration,), float64
        Sorted scores of the held-out calibration rows.
    mean_, scale_ : ndarray of shape (d,), float64
        Standardisation applied to every row before scoring (zeros and ones if
        ``standardize=False``).

    Notes
    -----
    A row that is itself in the bank finds its own copy at distance 0, so scoring the
    reference rows again understates the scores of the bank rows among them. Score new rows,
    or rows held out of the reference.

    Raises
    ------
    TypeError, ValueError
        For a non-numeric, non-2-D or non-finite reference, a setting out of range, or a split
        that leaves no calibration row or a bank of at most ``n_neighbors`` rows.

    Examples
    --------
    >>> import numpy as np
    >>> from latentlens.scores import OutlierScorer
    >>> rng = np.random.default_rng(0)
    >>> scorer = OutlierScorer(rng.normal(size=(2000, 8)))
    >>> result = scorer.score(np.vstack([rng.normal(size=(1, 8)), np.full((1, 8), 6.0)]))
    >>> bool(result.p_values[0] > 0.05), bool(result.p_values[1] < 0.01)
    (True, True)
    """

    def __init__(
        self,
        reference,
        *,
        n_neighbors: int = 10,
        method: str = "knn",
        metric: str = "euclidean",
        standardize: bool = True,
        max_bank_size: int = 4000,
        calibration_fraction: float = 0.25,
        random_state=0,
    ) -> None:
        reference = check_matrix("reference", reference, min_rows=2)
        self.n_neighbors = check_int("n_neighbors", n_neighbors, minimum=1)
        self.method = check_choice("method", method, OUTLIER_METHODS)
        self.metric = check_choice("metric", metric, OUTLIER_METRICS)
        if not isinstance(standardize, (bool, np.bool_)):
            raise TypeError(f"standardize must be True or False; got {standardize!r}.")
        self.standardize = bool(standardize)
        self.max_bank_size = check_int("max_bank_size", max_bank_size, minimum=2)
        self.calibration_fraction = check_probability("calibration_fraction", calibration_fraction)
        rng = make_rng(random_state)

        n_rows = reference.shape[0]
        n_calibration = int(round(self.calibration_fraction * n_rows))
        n_bank = min(n_rows - n_calibration, self.max_bank_size)
        if n_calibration < 1 or n_bank <= self.n_neighbors:
            raise ValueError(
                f"reference has {n_rows} rows, which with calibration_fraction="
                f"{self.calibration_fraction} leaves {n_calibration} calibration row(s) and a "
                f"bank of {n_bank}; need at least 1 calibration row and a bank of more than "
                f"n_neighbors={self.n_neighbors} rows. Pass more reference rows or lower "
                "n_neighbors."
            )
        if n_calibration < 19:
            logger.warning(
                "OutlierScorer has %d calibration rows, so no p-value can fall below %.3f",
                n_calibration,
                1.0 / (n_calibration + 1),
            )
        order = rng.permutation(n_rows)
        calibration_rows = reference[order[:n_calibration]]
        bank_rows = reference[order[n_calibration : n_calibration + n_bank]]

        # Standardisation statistics come from the bank alone, so the transform does not depend
        # on the calibration rows and they stay exchangeable with new rows.
        if self.standardize:
            self.mean_ = bank_rows.mean(axis=0, dtype=np.float64)
            scale = bank_rows.std(axis=0, dtype=np.float64)
            self.scale_ = np.where(scale > 0, scale, 1.0)
        else:
            self.mean_ = np.zeros(reference.shape[1])
            self.scale_ = np.ones(reference.shape[1])
        self.bank_ = self._standardise(bank_rows)
        self.n_features_in_ = reference.shape[1]

        if self.method == "knn":
            self._index = NearestNeighbors(n_neighbors=self.n_neighbors, metric=self.metric)
        else:
            self._index = LocalOutlierFactor(
                n_neighbors=self.n_neighbors, metric=self.metric, novelty=True
            )
        self._index.fit(self.bank_)
        self.calibration_scores_ = np.sort(self._raw_scores(self._standardise(calibration_rows)))

    @property
    def n_calibration_(self) -> int:
        """Number of held-out calibration rows."""
        return self.calibration_scores_.shape[0]

    def score(self, X) -> OutlierScores:
        """Score rows against the reference bank and return their conformal p-values.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Rows to score, with the reference's ``d``.

        Returns
        -------
        OutlierScores

        Raises
        ------
        TypeError, ValueError
            If ``X`` is not numeric, not 2-D, has non-finite values or another width.
        """
        rows = check_matrix("X", X, min_rows=1)
        if rows.shape[1] != self.n_features_in_:
            check_same_features("X", rows, "the reference", self.bank_)
        scores = self._raw_scores(self._standardise(rows))
        return OutlierScores(scores=scores, p_values=self.p_values(scores), method=self.method)

    def p_values(self, scores) -> np.ndarray:
        """Return conformal p-values for scores of this scorer's method, shape (n,)."""
        scores = np.asarray(scores, dtype=np.float64)
        # Count calibration scores >= s: the sorted array's length minus the left insertion
        # point of s.
        n_at_least = self.n_calibration_ - np.searchsorted(
            self.calibration_scores_, scores, side="left"
        )
        return (1.0 + n_at_least) / (self.n_calibration_ + 1.0)

    def threshold(self, alpha: float = 0.05) -> float:
        """Return the smallest score whose p-value is at most ``alpha`` (inf if none can be)."""
        alpha = check_probability("alpha", alpha)
        # p <= alpha needs at most j = floor(alpha (n_cal + 1)) - 1 calibration scores >= s.
        allowed = int(np.floor(alpha * (self.n_calibration_ + 1) + 1e-9)) - 1
        if allowed < 0:
            return float("inf")
        boundary = self.calibration_scores_[self.n_calibration_ - 1 - allowed]
        return float(np.nextafter(boundary, np.inf))

    def _standardise(self, rows: np.ndarray) -> np.ndarray:
        return (rows.astype(np.float64) - self.mean_) / self.scale_

    def _raw_scores(self, rows: np.ndarray) -> np.ndarray:
        if self.method == "knn":
            distances, _ = self._index.kneighbors(rows, n_neighbors=self.n_neighbors)
            return distances[:, -1].astype(np.float64)
        return -self._index.score_samples(rows).astype(np.float64)
