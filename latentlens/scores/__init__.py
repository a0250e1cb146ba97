"""Drift tests and outlier scores on activation matrices, with calibrated p-values.

Everything here takes plain numpy arrays of shape ``(n_samples, n_features)``. It depends only
on numpy, scipy and scikit-learn, and imports neither torch, TensorBoard nor the UMAP engine.

- :func:`drift_test`: is a current window drawn from the reference distribution?
- :func:`per_class_drift`: the same question per class, plus a test on the class mix.
- :class:`OutlierScorer`: how unusual is each row, with a conformal p-value.
"""

from latentlens.scores.drift import DriftResult, drift_test
from latentlens.scores.outliers import OutlierScorer, OutlierScores
from latentlens.scores.per_class import (
    ClassDrift,
    PerClassDriftResult,
    holm_adjust,
    per_class_drift,
)

__all__ = [
    "ClassDrift",
    "DriftResult",
    "OutlierScorer",
    "OutlierScores",
    "PerClassDriftResult",
    "drift_test",
    "holm_adjust",
    "per_class_drift",
]
