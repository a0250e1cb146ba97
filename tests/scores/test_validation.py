"""Bad input to latentlens.scores fails at the entry point with a message that names the fix."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from latentlens.scores import OutlierScorer, drift_test, per_class_drift


@pytest.fixture
def windows():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 3)), rng.normal(size=(30, 3))


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (None, TypeError, "reference must be a 2-D numeric array.*got NoneType"),
        ("abc", TypeError, "got str"),
        (np.array([["a", "b"]]), TypeError, "dtype <U1.*np.asarray"),
        (np.ones((4, 2), dtype=complex), TypeError, "real numbers"),
        (np.ones(5), ValueError, r"2-D array.*shape \(5,\).*reshape\(-1, 1\)"),
        (np.ones((4, 0)), ValueError, "at least one feature"),
        (np.ones((1, 3)), ValueError, "at least 2 rows; got 1"),
        (np.array([[0.0, 1.0], [np.nan, 1.0], [1.0, np.inf]]), ValueError, "2 row.*row 1"),
    ],
)
def test_drift_rejects_bad_reference(windows, bad, error, message):
    with pytest.raises(error, match=message):
        drift_test(bad, windows[1])


def test_drift_rejects_width_mismatch(windows):
    with pytest.raises(ValueError, match="same number of features; got 3 and 4"):
        drift_test(windows[0], np.ones((10, 4)))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"method": "wasserstein"}, ValueError, "method must be one of 'mmd', 'mmd_exact', 'ks'"),
        ({"alpha": 0.0}, ValueError, "alpha must lie strictly between 0 and 1; got 0.0"),
        ({"alpha": 1.5}, ValueError, "alpha must lie strictly between 0 and 1"),
        ({"alpha": "0.05"}, TypeError, "alpha must be a float"),
        ({"n_permutations": 0}, ValueError, "n_permutations must be an integer >= 1; got 0"),
        ({"n_permutations": 2.5}, TypeError, "n_permutations must be an integer"),
        ({"n_permutations": True}, TypeError, "n_permutations must be an integer"),
        ({"n_components": 0}, ValueError, "n_components must be an integer >= 1"),
        ({"n_features": 1}, ValueError, "n_features must be an integer >= 2"),
        ({"n_features": 63}, ValueError, "n_features must be even.*Use 64"),
        ({"bandwidth": -1.0}, ValueError, "bandwidth must be a positive finite float"),
        ({"bandwidth": float("nan")}, ValueError, "bandwidth must be a positive finite float"),
        ({"bandwidth": "median"}, TypeError, "bandwidth must be a positive float or None"),
        ({"random_state": np.random.RandomState(0)}, TypeError, "np.random.default_rng"),
        ({"random_state": -3}, ValueError, "non-negative"),
    ],
)
def test_drift_rejects_bad_options(windows, options, error, message):
    with pytest.raises(error, match=message):
        drift_test(*windows, **options)


def test_exact_mmd_rejects_large_input():
    big = np.zeros((2600, 2))
    with pytest.raises(ValueError, match="at most 5000 pooled rows; got 5200.*method='mmd'"):
        drift_test(big, big, method="mmd_exact")


def test_per_class_rejects_bad_labels(windows):
    reference, current = windows
    good_reference_labels = np.zeros(40, dtype=int)
    good_current_labels = np.zeros(30, dtype=int)
    with pytest.raises(ValueError, match="reference_labels has 39 labels but its window has 40"):
        per_class_drift(reference, current, np.zeros(39), good_current_labels)
    with pytest.raises(ValueError, match=r"current_labels must be 1-D.*shape \(30, 1\)"):
        per_class_drift(reference, current, good_reference_labels, np.zeros((30, 1)))
    with pytest.raises(TypeError, match="current_labels must be a 1-D array"):
        per_class_drift(reference, current, good_reference_labels, None)
    with pytest.raises(ValueError, match="NaN or infinite labels"):
        per_class_drift(reference, current, good_reference_labels, np.full(30, np.nan))
    mixed = np.array([1, "a"] * 15, dtype=object)
    with pytest.raises(TypeError, match="mutually comparable"):
        per_class_drift(reference, current, good_reference_labels, mixed)


def test_per_class_rejects_bad_options(windows):
    reference, current = windows
    labels = (np.zeros(40, dtype=int), np.zeros(30, dtype=int))
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['n_neighbours'\]"):
        per_class_drift(reference, current, *labels, n_neighbours=3)
    with pytest.raises(ValueError, match="min_class_size must be an integer >= 2; got 1"):
        per_class_drift(reference, current, *labels, min_class_size=1)
    with pytest.raises(ValueError, match="n_features must be even"):
        per_class_drift(reference, current, *labels, n_features=5)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"n_neighbors": 0}, ValueError, "n_neighbors must be an integer >= 1"),
        ({"method": "iforest"}, ValueError, "method must be one of 'knn', 'lof'"),
        ({"metric": "manhattan"}, ValueError, "metric must be one of 'euclidean', 'cosine'"),
        ({"standardize": "yes"}, TypeError, "standardize must be True or False"),
        ({"max_bank_size": 1}, ValueError, "max_bank_size must be an integer >= 2"),
        ({"calibration_fraction": 1.0}, ValueError, "calibration_fraction must lie strictly"),
        ({"n_neighbors": 40}, ValueError, "bank of 30; need .* more than n_neighbors=40"),
    ],
)
def test_outlier_scorer_rejects_bad_options(windows, options, error, message):
    with pytest.raises(error, match=message):
        OutlierScorer(windows[0], **options)


def test_outlier_score_rejects_bad_rows(windows):
    scorer = OutlierScorer(windows[0], n_neighbors=3)
    with pytest.raises(ValueError, match="X and the reference must have the same number"):
        scorer.score(np.ones((2, 5)))
    with pytest.raises(ValueError, match="X contains NaN"):
        scorer.score(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"X must be a 2-D array.*shape \(3,\)"):
        scorer.score(np.ones(3))
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
        scorer.score(windows[1]).flags(alpha=2)


def test_drift_rejects_bad_whiten(windows):
    with pytest.raises(TypeError, match="whiten must be True or False; got 'no'"):
        drift_test(*windows, whiten="no")


def test_scores_import_no_heavy_modules():
    """latentlens.scores works on plain arrays and pulls in none of the other layers."""
    code = (
        "import sys, latentlens.scores; "
        "print(sorted(m for m in ('torch', 'tensorboard', 'numba', 'latentlens.umap', "
        "'latentlens.capture', 'latentlens.export') if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"
