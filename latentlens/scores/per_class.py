"""Drift per class, with Holm's correction, and a chi-square test on the class mix."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from latentlens.scores._validation import (
    check_int,
    check_matrix,
    check_probability,
    check_same_features,
    make_rng,
)
from latentlens.scores.drift import TEST_OPTIONS, DriftResult, check_test_options, drift_test

TESTED = "tested"
NOT_TESTED = "not tested (n below min)"


@dataclass(frozen=True)
class ClassDrift:
    """Drift of one class between the two windows.

    Attributes
    ----------
    label : object
        Class label as given (converted to a Python scalar where possible).
    n_reference, n_current : int
        Rows of this class in each window.
    status : str
        ``"tested"`` or ``"not tested (n below min)"``.
    result : DriftResult or None
        The class's own test; None when not tested.
    p_value_adjusted : float
        Holm-adjusted p-value across the tested classes; NaN when not tested.
    drift : bool
        ``p_value_adjusted < alpha``; False when not tested.
    """

    label: object
    n_reference: int
    n_current: int
    status: str
    result: DriftResult | None
    p_value_adjusted: float
    drift: bool


@dataclass(frozen=True)
class PerClassDriftResult:
    """Per-class drift tests and the test on class proportions.

    Attributes
    ----------
    classes : tuple of ClassDrift
        One entry per label seen in either window, in sorted label order.
    alpha : float
    min_class_size : int
    proportion_statistic : float
        Pearson chi-square statistic of the 2 x C table of class counts; NaN with one class.
    proportion_p_value : float
        Its p-value with ``C - 1`` degrees of freedom; NaN with one class.
    proportion_dof : int
        ``C - 1``.
    """

    classes: tuple[ClassDrift, ...]
    alpha: float
    min_class_size: int
    proportion_statistic: float
    proportion_p_value: float
    proportion_dof: int

    @property
    def proportion_drift(self) -> bool:
        """Whether the class proportions differ at level ``alpha``."""
        return bool(self.proportion_p_value < self.alpha)

    @property
    def drift(self) -> bool:
        """Whether any class drifted after Holm's correction, or the class mix changed."""
        return self.proportion_drift or any(entry.drift for entry in self.classes)

    def to_rows(self) -> list[dict]:
        """Return one plain dict per class, NaN in the numeric fields of untested classes.

        Keys: ``class``, ``n_reference``, ``n_current``, ``status``, ``statistic``,
        ``p_value``, ``p_value_holm``, ``effect_size``, ``drift``.
        """
        rows = []
        for entry in self.classes:
            result = entry.result
            rows.append(
                {
                    "class": entry.label,
                    "n_reference": entry.n_reference,
                    "n_current": entry.n_current,
                    "status": entry.status,
                    "statistic": result.statistic if result else math.nan,
                    "p_value": result.p_value if result else math.nan,
                    "p_value_holm": entry.p_value_adjusted,
                    "effect_size": result.effect_size if result else math.nan,
                    "drift": entry.drift,
                }
            )
        return rows

    def to_dict(self) -> dict:
        """Return the rows, the proportion test and the overall flag as plain Python values."""
        return {
            "alpha": self.alpha,
            "min_class_size": self.min_class_size,
            "classes": self.to_rows(),
            "proportion_statistic": self.proportion_statistic,
            "proportion_p_value": self.proportion_p_value,
            "proportion_dof": self.proportion_dof,
            "proportion_drift": self.proportion_drift,
            "drift": self.drift,
        }


def holm_adjust(p_values) -> np.ndarray:
    """Return Holm's step-down adjusted p-values, in the input order.

    The ``i``-th smallest p-value (from 0) is multiplied by ``L - i`` for ``L`` tests, a running
    maximum keeps the adjusted values monotone, and values are capped at 1.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    count = p_values.size
    order = np.argsort(p_values, kind="stable")
    scaled = p_values[order] * (count - np.arange(count))
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(count)
    adjusted[order] = adjusted_sorted
    return adjusted


def per_class_drift(
    reference,
    current,
    reference_labels,
    current_labels,
    *,
    min_class_size: int = 50,
    alpha: float = 0.05,
    random_state=None,
    **test_options,
) -> PerClassDriftResult:
    """Run :func:`drift_test` separately for each class, and test the class proportions.

    A class is tested only when it has at least ``min_class_size`` rows in both windows;
    smaller classes are reported with status ``"not tested (n below min)"``. The p-values of
    the tested classes are adjusted with Holm's step-down method, which keeps the family-wise
    error rate at ``alpha`` for any dependence between classes. The class mix is compared with
    Pearson's chi-square test on the 2 x C table of counts (no continuity correction).

    Parameters
    ----------
    reference : array-like of shape (n, d)
    current : array-like of shape (m, d)
    reference_labels : array-like of shape (n,)
        Class of each reference row (true or predicted), any hashable, sortable scalars.
    current_labels : array-like of shape (m,)
    min_class_size : int, default=50
        Rows per window below which a class is not tested; at least 2.
    alpha : float, default=0.05
        Level for the per-class flags and the proportion flag.
    random_state : None, int or numpy.random.Generator, optional
        Seeds every class's test (each class gets its own child seed).
    **test_options
        Passed to :func:`drift_test` (``method``, ``n_permutations``, ``n_components``,
        ``n_features``, ``bandwidth``, ``whiten``).

    Returns
    -------
    PerClassDriftResult

    Raises
    ------
    TypeError, ValueError
        For invalid arrays or settings (as :func:`drift_test`), labels whose length differs from
        the rows, labels that are not 1-D, or unknown ``test_options``.

    Notes
    -----
    The chi-square approximation needs expected counts of about 5 or more per cell; with rare
    classes its p-value is approximate.

    Examples
    --------
    >>> import numpy as np
    >>> from latentlens.scores import per_class_drift
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 200)
    >>> reference = rng.normal(size=(400, 8)) + labels[:, None]
    >>> current = rng.normal(size=(400, 8)) + labels[:, None]
    >>> current[labels == 1] += 0.5
    >>> result = per_class_drift(reference, current, labels, labels, random_state=0)
    >>> [row["drift"] for row in result.to_rows()]
    [False, True]
    """
    reference = check_matrix("reference", reference, min_rows=2)
    current = check_matrix("current", current, min_rows=2)
    check_same_features("reference", reference, "current", current)
    reference_labels = _check_labels("reference_labels", reference_labels, reference.shape[0])
    current_labels = _check_labels("current_labels", current_labels, current.shape[0])
    min_class_size = check_int("min_class_size", min_class_size, minimum=2)
    alpha = check_probability("alpha", alpha)
    unknown = sorted(set(test_options) - set(TEST_OPTIONS))
    if unknown:
        raise TypeError(
            f"per_class_drift got unknown option(s) {unknown}; allowed: {list(TEST_OPTIONS)}."
        )
    check_test_options(**test_options)
    rng = make_rng(random_state)

    try:
        labels = np.unique(np.concatenate([reference_labels, current_labels]))
    except TypeError as error:
        raise TypeError(
            "reference_labels and current_labels must hold mutually comparable values "
            f"(all numbers or all strings); sorting them failed: {error}"
        ) from None
    seeds = rng.integers(0, 2**63 - 1, size=labels.size)

    counts = np.zeros((2, labels.size), dtype=np.int64)
    results: list[DriftResult | None] = []
    for index, label in enumerate(labels):
        in_reference = reference_labels == label
        in_current = current_labels == label
        counts[0, index] = int(in_reference.sum())
        counts[1, index] = int(in_current.sum())
        if min(counts[:, index]) < min_class_size:
            results.append(None)
            continue
        results.append(
            drift_test(
                reference[in_reference],
                current[in_current],
                alpha=alpha,
                random_state=int(seeds[index]),
                **test_options,
            )
        )

    tested = [index for index, result in enumerate(results) if result is not None]
    adjusted = np.full(labels.size, math.nan)
    if tested:
        adjusted[tested] = holm_adjust([results[index].p_value for index in tested])

    classes = tuple(
        ClassDrift(
            label=label.item() if hasattr(label, "item") else label,
            n_reference=int(counts[0, index]),
            n_current=int(counts[1, index]),
            status=TESTED if results[index] is not None else NOT_TESTED,
            result=results[index],
            p_value_adjusted=float(adjusted[index]),
            drift=bool(results[index] is not None and adjusted[index] < alpha),
        )
        for index, label in enumerate(labels)
    )

    if labels.size >= 2:
        chi_square = stats.chi2_contingency(counts, correction=False)
        proportion_statistic = float(chi_square.statistic)
        proportion_p_value = float(chi_square.pvalue)
    else:
        proportion_statistic = proportion_p_value = math.nan
    return PerClassDriftResult(
        classes=classes,
        alpha=alpha,
        min_class_size=min_class_size,
        proportion_statistic=proportion_statistic,
        proportion_p_value=proportion_p_value,
        proportion_dof=max(labels.size - 1, 0),
    )


def _check_labels(name: str, value: object, n_rows: int) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a 1-D array of class labels; got {type(value).__name__}.")
    labels = np.asarray(value)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one label per row; got shape {labels.shape}.")
    if labels.shape[0] != n_rows:
        raise ValueError(
            f"{name} has {labels.shape[0]} labels but its window has {n_rows} rows; pass one "
            "label per row."
        )
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise ValueError(f"{name} contains NaN or infinite labels; drop or relabel those rows.")
    return labels
