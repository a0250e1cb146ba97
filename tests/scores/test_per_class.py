"""per_class_drift: Holm's correction, the class-mix test and the minimum class size."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from latentlens.scores import PerClassDriftResult, drift_test, holm_adjust, per_class_drift


def holm_rejections(p_values, alpha):
    """Holm's sequential procedure as stated: reject in increasing order until one fails."""
    order = np.argsort(p_values, kind="stable")
    rejected = set()
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected.add(int(index))
    return rejected


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_sequential_procedure(seed):
    rng = np.random.default_rng(seed)
    p_values = np.concatenate([rng.uniform(0, 0.05, 4), rng.uniform(0, 1, 6), [0.01, 0.01]])
    adjusted = holm_adjust(p_values)
    assert (adjusted >= p_values).all()
    assert (adjusted <= 1.0).all()
    for alpha in np.linspace(0.001, 0.5, 200):
        assert set(np.flatnonzero(adjusted <= alpha)) == holm_rejections(p_values, alpha)


def test_holm_hand_computed():
    np.testing.assert_allclose(
        holm_adjust([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5], rtol=1e-12
    )
    np.testing.assert_allclose(holm_adjust([0.4, 0.6]), [0.8, 0.8])
    assert holm_adjust([]).shape == (0,)


@pytest.fixture(scope="module")
def labelled_windows():
    # "cat" has no drift, so its p-value is uniform; with this seed it lands at 0.66.
    rng = np.random.default_rng(1)
    sizes_reference = {"cat": 300, "dog": 250, "eel": 30}
    sizes_current = {"cat": 280, "dog": 260, "eel": 80}
    centers = {"cat": 0.0, "dog": 3.0, "eel": -3.0}

    def window(sizes, dog_shift):
        rows, labels = [], []
        for label, size in sizes.items():
            shift = centers[label] + (dog_shift if label == "dog" else 0.0)
            rows.append(rng.normal(size=(size, 6)) + shift)
            labels += [label] * size
        return np.vstack(rows), np.array(labels)

    reference, reference_labels = window(sizes_reference, 0.0)
    current, current_labels = window(sizes_current, 0.4)
    return reference, current, reference_labels, current_labels


def test_per_class_flags_only_shifted_class(labelled_windows):
    reference, current, reference_labels, current_labels = labelled_windows
    result = per_class_drift(reference, current, reference_labels, current_labels, random_state=0)
    assert isinstance(result, PerClassDriftResult)
    rows = {row["class"]: row for row in result.to_rows()}
    assert list(rows) == ["cat", "dog", "eel"]

    assert rows["cat"]["status"] == "tested"
    assert not rows["cat"]["drift"]
    assert rows["dog"]["status"] == "tested"
    assert rows["dog"]["drift"]
    assert rows["dog"]["p_value_holm"] < 0.01

    assert rows["eel"]["status"] == "not tested (n below min)"
    assert (rows["eel"]["n_reference"], rows["eel"]["n_current"]) == (30, 80)
    for key in ("statistic", "p_value", "p_value_holm", "effect_size"):
        assert math.isnan(rows["eel"][key])
    assert rows["eel"]["drift"] is False
    assert result.drift


def test_per_class_uses_drift_test_and_holm(labelled_windows):
    reference, current, reference_labels, current_labels = labelled_windows
    result = per_class_drift(
        reference,
        current,
        reference_labels,
        current_labels,
        method="ks",
        min_class_size=20,
    )
    tested = [entry for entry in result.classes if entry.result is not None]
    assert len(tested) == 3
    for entry in tested:
        own = drift_test(
            reference[reference_labels == entry.label],
            current[current_labels == entry.label],
            method="ks",
        )
        assert entry.result.p_value == pytest.approx(own.p_value, rel=1e-12)
    raw = [entry.result.p_value for entry in tested]
    np.testing.assert_allclose([entry.p_value_adjusted for entry in tested], holm_adjust(raw))


def test_proportion_test_matches_pearson_formula(labelled_windows):
    reference, current, reference_labels, current_labels = labelled_windows
    result = per_class_drift(
        reference, current, reference_labels, current_labels, n_permutations=9, random_state=0
    )
    observed = np.array([[300, 250, 30], [280, 260, 80]], dtype=float)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0) / observed.sum()
    statistic = ((observed - expected) ** 2 / expected).sum()
    assert result.proportion_statistic == pytest.approx(statistic, rel=1e-12)
    assert result.proportion_dof == 2
    assert result.proportion_p_value == pytest.approx(stats.chi2.sf(statistic, 2), rel=1e-9)
    assert result.proportion_drift


def test_unchanged_mix_and_labels_unseen_in_one_window():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(200, 3))
    current = rng.normal(size=(210, 3))
    reference_labels = np.repeat([0, 1], 100)
    current_labels = np.concatenate([np.repeat([0, 1], 100), np.full(10, 2)])
    result = per_class_drift(reference, current, reference_labels, current_labels, random_state=0)
    rows = result.to_rows()
    assert [row["class"] for row in rows] == [0, 1, 2]
    assert rows[2]["n_reference"] == 0
    assert rows[2]["status"] == "not tested (n below min)"
    assert result.proportion_dof == 2


def test_single_class_has_no_proportion_test():
    rng = np.random.default_rng(2)
    reference, current = rng.normal(size=(80, 3)), rng.normal(size=(70, 3))
    result = per_class_drift(
        reference, current, np.zeros(80), np.zeros(70), n_permutations=19, random_state=0
    )
    assert math.isnan(result.proportion_p_value)
    assert result.proportion_dof == 0
    assert not result.proportion_drift
    assert result.to_dict()["classes"][0]["class"] == 0.0


def test_per_class_false_alarms_stay_at_alpha():
    """Family-wise error rate over 3 tested null classes, 300 repeats."""
    rng = np.random.default_rng(3)
    false_alarms = 0
    mix_alarms = 0
    repeats = 300
    for repeat in range(repeats):
        labels_reference = rng.integers(0, 3, 240)
        labels_current = rng.integers(0, 3, 240)
        reference = rng.normal(size=(240, 3)) + labels_reference[:, None]
        current = rng.normal(size=(240, 3)) + labels_current[:, None]
        result = per_class_drift(
            reference,
            current,
            labels_reference,
            labels_current,
            min_class_size=40,
            n_permutations=40,
            n_features=32,
            random_state=repeat,
        )
        false_alarms += any(entry.drift for entry in result.classes)
        mix_alarms += result.proportion_drift
    # Holm keeps the family-wise rate at or below 0.05 (its bound); the binomial spread over
    # 300 repeats is about 0.013.
    assert false_alarms / repeats <= 0.08
    assert 0.02 <= mix_alarms / repeats <= 0.08


def test_per_class_is_reproducible(labelled_windows):
    first = per_class_drift(*labelled_windows, random_state=5)
    second = per_class_drift(*labelled_windows, random_state=5)
    assert [entry.result for entry in first.classes] == [entry.result for entry in second.classes]
    np.testing.assert_equal(
        [entry.p_value_adjusted for entry in first.classes],
        [entry.p_value_adjusted for entry in second.classes],
    )
