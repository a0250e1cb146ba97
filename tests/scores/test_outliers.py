"""OutlierScorer against brute-force kNN and LOF oracles, and its conformal p-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from latentlens.scores import OutlierScorer, OutlierScores


def brute_force_kth_distance(queries, bank, k, metric="euclidean"):
    distances = cdist(queries, bank, metric=metric)
    return np.sort(distances, axis=1)[:, k - 1]


def brute_force_lof(queries, bank, k):
    """Local outlier factor of new rows (Breunig et al. 2000), written from the definition."""
    bank_distances = cdist(bank, bank)
    np.fill_diagonal(bank_distances, np.inf)
    bank_neighbours = np.argsort(bank_distances, axis=1)[:, :k]
    k_distance = np.take_along_axis(bank_distances, bank_neighbours[:, -1:], axis=1)[:, 0]

    def local_reachability_density(distances_to_bank, neighbours):
        reach = np.maximum(
            k_distance[neighbours], np.take_along_axis(distances_to_bank, neighbours, 1)
        )
        return 1.0 / (reach.mean(axis=1) + 1e-10)

    bank_density = local_reachability_density(bank_distances, bank_neighbours)
    query_distances = cdist(queries, bank)
    query_neighbours = np.argsort(query_distances, axis=1)[:, :k]
    query_density = local_reachability_density(query_distances, query_neighbours)
    return bank_density[query_neighbours].mean(axis=1) / query_density


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 5)) * [1.0, 3.0, 0.2, 1.0, 10.0] + 4.0


def split_rows(scorer, reference):
    """Recover which reference rows went to the bank from the public fitted attributes."""
    restored = scorer.bank_ * scorer.scale_ + scorer.mean_
    distances = cdist(restored, reference)
    bank_index = distances.argmin(axis=1)
    assert np.allclose(distances.min(axis=1), 0.0, atol=1e-9)
    in_bank = np.zeros(len(reference), dtype=bool)
    in_bank[bank_index] = True
    return in_bank


def test_knn_scores_match_brute_force(reference):
    scorer = OutlierScorer(reference, n_neighbors=7, random_state=3)
    in_bank = split_rows(scorer, reference)
    assert in_bank.sum() == 300
    assert scorer.n_calibration_ == 100

    bank = reference[in_bank]
    np.testing.assert_allclose(scorer.mean_, bank.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scorer.scale_, bank.std(axis=0), rtol=1e-12)

    def standardise(rows):
        return (rows - bank.mean(axis=0)) / bank.std(axis=0)

    expected_calibration = brute_force_kth_distance(
        standardise(reference[~in_bank]), standardise(bank), 7
    )
    np.testing.assert_allclose(scorer.calibration_scores_, np.sort(expected_calibration), rtol=1e-9)

    queries = np.random.default_rng(1).normal(size=(50, 5)) * 3 + 4.0
    result = scorer.score(queries)
    expected = brute_force_kth_distance(standardise(queries), standardise(bank), 7)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-9)


def test_p_values_match_conformal_formula(reference):
    scorer = OutlierScorer(reference, n_neighbors=5, random_state=0)
    queries = np.random.default_rng(2).normal(size=(200, 5)) * 4 + 4.0
    result = scorer.score(queries)
    calibration = scorer.calibration_scores_
    expected = [
        (1 + np.sum(calibration >= score)) / (len(calibration) + 1) for score in result.scores
    ]
    np.testing.assert_allclose(result.p_values, expected, rtol=1e-12)
    # Ties count as "at least as large".
    tied = scorer.p_values(calibration[[0, 50, 99]])
    np.testing.assert_allclose(tied, [101 / 101, 51 / 101, 2 / 101])
    np.testing.assert_array_equal(result.flags(0.1), result.p_values <= 0.1)
    assert len(result) == 200
    assert result.method == "knn"


def test_threshold_is_smallest_flagged_score(reference):
    scorer = OutlierScorer(reference, n_neighbors=5, random_state=0)
    for alpha in (0.01, 0.05, 0.2):
        threshold = scorer.threshold(alpha)
        assert scorer.p_values([threshold])[0] <= alpha
        assert scorer.p_values([np.nextafter(threshold, -np.inf)])[0] > alpha
    assert scorer.threshold(0.005) == np.inf


def test_lof_matches_definition(reference):
    scorer = OutlierScorer(reference, n_neighbors=8, method="lof", random_state=4)
    in_bank = split_rows(scorer, reference)
    queries = np.random.default_rng(3).normal(size=(40, 5)) * 2 + 4.0
    result = scorer.score(queries)
    expected = brute_force_lof(scorer._standardise(queries), scorer.bank_, 8)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
    expected_calibration = brute_force_lof(
        scorer._standardise(reference[~in_bank]), scorer.bank_, 8
    )
    np.testing.assert_allclose(scorer.calibration_scores_, np.sort(expected_calibration), rtol=1e-6)


def test_cosine_without_standardisation(reference):
    scorer = OutlierScorer(reference, n_neighbors=3, metric="cosine", standardize=False)
    np.testing.assert_array_equal(scorer.mean_, 0.0)
    np.testing.assert_array_equal(scorer.scale_, 1.0)
    queries = np.random.default_rng(4).normal(size=(20, 5))
    expected = brute_force_kth_distance(queries, scorer.bank_, 3, metric="cosine")
    np.testing.assert_allclose(scorer.score(queries).scores, expected, rtol=1e-9, atol=1e-12)


def test_bank_is_capped_and_constant_features_kept():
    rng = np.random.default_rng(5)
    rows = np.column_stack([rng.normal(size=(3000, 3)), np.full(3000, 7.0)])
    scorer = OutlierScorer(rows, max_bank_size=500, calibration_fraction=0.1)
    assert scorer.bank_.shape == (500, 4)
    assert scorer.n_calibration_ == 300
    assert scorer.scale_[3] == 1.0
    assert np.isfinite(scorer.score(rows[:10]).scores).all()


def test_far_rows_get_smallest_p_value(reference):
    scorer = OutlierScorer(reference, random_state=0)
    far = reference.mean(axis=0) + 50 * reference.std(axis=0)
    result = scorer.score(far[None, :])
    assert isinstance(result, OutlierScores)
    assert result.p_values[0] == pytest.approx(1 / (scorer.n_calibration_ + 1))
    assert result.flags(0.05)[0]


def test_few_calibration_rows_warn(caplog):
    rows = np.random.default_rng(6).normal(size=(40, 2))
    with caplog.at_level("WARNING", logger="latentlens.scores.outliers"):
        scorer = OutlierScorer(rows, n_neighbors=3)
    assert scorer.n_calibration_ == 10
    assert "10 calibration rows" in caplog.text


def test_same_seed_same_split(reference):
    first = OutlierScorer(reference, random_state=9)
    second = OutlierScorer(reference, random_state=9)
    np.testing.assert_array_equal(first.bank_, second.bank_)
    np.testing.assert_array_equal(first.calibration_scores_, second.calibration_scores_)
