"""drift_test against brute-force oracles, and its behaviour on shifted and degenerate input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA

from latentlens.scores import DriftResult, _mmd, drift_test


def gaussian_kernel(x, y, bandwidth):
    return np.exp(-np.sum((x - y) ** 2) / (2.0 * bandwidth**2))


def brute_force_mmd2(reference, current, bandwidth, *, unbiased):
    """MMD^2 from explicit double loops over rows (Gretton et al. 2012, eqs. 2 and 3)."""

    def mean_kernel(rows_a, rows_b, skip_diagonal):
        total, count = 0.0, 0
        for i, x in enumerate(rows_a):
            for j, y in enumerate(rows_b):
                if skip_diagonal and i == j:
                    continue
                total += gaussian_kernel(x, y, bandwidth)
                count += 1
        return total / count

    within_reference = mean_kernel(reference, reference, unbiased)
    within_current = mean_kernel(current, current, unbiased)
    between = mean_kernel(reference, current, False)
    return within_reference + within_current - 2.0 * between


@pytest.fixture(scope="module")
def small_windows():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(14, 3)) * [1.0, 2.0, 0.5]
    current = rng.normal(size=(11, 3)) * [1.0, 2.0, 0.5] + [0.8, 0.0, 0.3]
    return reference, current


def test_exact_statistic_matches_double_loop(small_windows):
    reference, current = small_windows
    result = drift_test(
        reference, current, method="mmd_exact", bandwidth=1.7, whiten=False, random_state=0
    )
    expected = brute_force_mmd2(reference, current, 1.7, unbiased=True)
    assert result.statistic == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_default_bandwidth_is_reference_median_distance(small_windows):
    reference, current = small_windows
    result = drift_test(reference, current, method="mmd_exact", whiten=False, random_state=0)
    distances = [
        np.linalg.norm(reference[i] - reference[j])
        for i, j in itertools.combinations(range(len(reference)), 2)
    ]
    # With n_components >= d the PCA is a rotation, so distances in PCA space are unchanged.
    assert result.bandwidth == pytest.approx(np.median(distances), rel=1e-9)


def test_exact_p_value_matches_full_enumeration():
    rng = np.random.default_rng(11)
    reference = rng.normal(size=(5, 2))
    current = rng.normal(size=(5, 2)) + 0.6
    pooled = np.vstack([reference, current])
    bandwidth = 1.3

    observed = brute_force_mmd2(reference, current, bandwidth, unbiased=True)
    at_least = 0
    splits = list(itertools.combinations(range(10), 5))
    for chosen in splits:
        rest = [i for i in range(10) if i not in chosen]
        value = brute_force_mmd2(pooled[list(chosen)], pooled[rest], bandwidth, unbiased=True)
        at_least += value >= observed - 1e-12
    exact_p_value = at_least / len(splits)

    result = drift_test(
        reference,
        current,
        method="mmd_exact",
        bandwidth=bandwidth,
        whiten=False,
        n_permutations=20000,
        random_state=0,
    )
    # Monte Carlo p-value with B = 20,000: standard error below 0.0036.
    assert result.p_value == pytest.approx(exact_p_value, abs=0.015)


def test_rff_statistic_approximates_biased_mmd(small_windows):
    reference, current = small_windows
    expected = brute_force_mmd2(reference, current, 1.5, unbiased=False)
    estimates = [
        drift_test(
            reference,
            current,
            bandwidth=1.5,
            whiten=False,
            n_features=20000,
            n_permutations=1,
            random_state=seed,
        ).statistic
        for seed in range(5)
    ]
    # Each feature pair has variance O(1); 10,000 frequencies give a relative error of a few %.
    assert np.mean(estimates) == pytest.approx(expected, rel=0.05)


def test_whitened_statistic_matches_sklearn_whitening(small_windows):
    reference, current = small_windows
    result = drift_test(reference, current, method="mmd_exact", random_state=0)
    whitened = PCA(n_components=3, whiten=True).fit_transform(np.vstack([reference, current]))
    whitened_reference, whitened_current = whitened[:14], whitened[14:]
    # The median bandwidth scales with the data, so the ddof of the whitening cancels out.
    bandwidth = np.median(
        [
            np.linalg.norm(whitened_reference[i] - whitened_reference[j])
            for i, j in itertools.combinations(range(14), 2)
        ]
    )
    expected = brute_force_mmd2(whitened_reference, whitened_current, bandwidth, unbiased=True)
    assert result.statistic == pytest.approx(expected, rel=1e-9)


def test_whitening_finds_low_variance_shift():
    rng = np.random.default_rng(13)
    scales = np.array([10.0, 10.0, 10.0, 10.0, 0.1])
    reference = rng.normal(size=(500, 5)) * scales
    current = rng.normal(size=(500, 5)) * scales + [0.0, 0.0, 0.0, 0.0, 0.05]
    assert drift_test(reference, current, random_state=0).p_value < 0.01
    assert drift_test(reference, current, whiten=False, random_state=0).p_value > 0.05


def test_flat_components_are_dropped():
    rng = np.random.default_rng(14)
    base = rng.normal(size=(300, 3))
    # A constant column and a copy of column 0 leave 3 directions with spread out of 5.
    rows = np.column_stack([base, np.full(300, 2.0), base[:, 0]])
    for method in ("mmd", "ks"):
        result = drift_test(rows[:150], rows[150:], method=method, random_state=0)
        assert result.n_components == 3
        assert np.isfinite(result.statistic)
        assert 0.0 < result.p_value <= 1.0


def test_permutation_p_value_counts_observed():
    statistics = np.array([2.0, 1.0, 3.0, 2.0, 0.5])
    assert _mmd.permutation_p_value(statistics) == pytest.approx(3 / 5)
    assert _mmd.permutation_p_value(np.array([5.0, 1.0, 2.0])) == pytest.approx(1 / 3)


def test_permutation_weights_split_rows():
    weights = _mmd.permutation_weights(3, 5, 50, np.random.default_rng(0))
    assert weights.shape == (51, 8)
    np.testing.assert_allclose(weights[0], [1 / 3] * 3 + [-1 / 5] * 5, rtol=1e-6)
    assert ((weights > 0).sum(axis=1) == 3).all()
    np.testing.assert_allclose(weights.sum(axis=1), 0.0, atol=1e-6)
    assert len({tuple(row > 0) for row in weights[1:]}) > 20


def test_ks_matches_scipy_on_sklearn_pca():
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(300, 4)) * [3.0, 2.0, 1.0, 0.5]
    current = rng.normal(size=(200, 4)) * [3.0, 2.0, 1.0, 0.5] + [0.0, 0.0, 0.4, 0.0]
    result = drift_test(reference, current, method="ks", n_components=4)

    projected = PCA(n_components=4).fit_transform(np.vstack([reference, current]))
    expected = [stats.ks_2samp(projected[:300, j], projected[300:, j]).pvalue for j in range(4)]
    np.testing.assert_allclose(result.component_p_values, expected, rtol=1e-7)
    assert result.p_value == pytest.approx(min(1.0, 4 * min(expected)))
    assert result.statistic == pytest.approx(
        stats.ks_2samp(projected[:300, 2], projected[300:, 2]).statistic
    )
    assert result.n_permutations is None
    assert result.bandwidth is None


def test_effect_size_is_centroid_distance(small_windows):
    reference, current = small_windows
    result = drift_test(reference, current, n_permutations=9, random_state=0)
    expected = np.sqrt(np.sum((reference.mean(axis=0) - current.mean(axis=0)) ** 2))
    assert result.effect_size == pytest.approx(expected, rel=1e-12)


def test_pooled_pca_ignores_window_order():
    rng = np.random.default_rng(2)
    first = rng.normal(size=(200, 6)) * np.arange(1, 7)
    second = rng.normal(size=(150, 6)) * np.arange(1, 7) + 1.0
    mean_a, components_a = _mmd.fit_pooled_pca(np.vstack([first, second]), 3, rng)
    mean_b, components_b = _mmd.fit_pooled_pca(np.vstack([second, first]), 3, rng)
    np.testing.assert_allclose(mean_a, mean_b, rtol=1e-12)
    np.testing.assert_allclose(np.abs(components_a.T @ components_b), np.eye(3), atol=1e-9)


def test_subspace_iteration_finds_top_components():
    rng = np.random.default_rng(4)
    # Wider than 256 columns, so the components come from subspace iteration.
    width = 300
    scales = np.geomspace(10.0, 0.1, width)
    rows = rng.normal(size=(1500, width)) * scales
    rotation, _ = np.linalg.qr(rng.normal(size=(width, width)))
    rows = rows @ rotation
    _, components = _mmd.fit_pooled_pca(rows, 16, np.random.default_rng(0))

    centred = rows - rows.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, ::-1][:, :16]
    cosines = np.linalg.svd(top.T @ components, compute_uv=False)
    assert components.shape == (width, 16)
    np.testing.assert_allclose(components.T @ components, np.eye(16), atol=1e-10)
    assert cosines.min() > 0.99


@pytest.mark.parametrize("method", ["mmd", "mmd_exact", "ks"])
def test_detects_mean_shift(method):
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(400, 10))
    current = rng.normal(size=(400, 10)) + 0.25
    result = drift_test(reference, current, method=method, random_state=0)
    assert result.p_value < 0.01
    assert result.drift


@pytest.mark.parametrize("method", ["mmd", "mmd_exact"])
def test_detects_spread_change(method):
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(400, 5))
    current = rng.normal(size=(400, 5)) * 1.3
    result = drift_test(reference, current, method=method, random_state=0)
    assert result.p_value < 0.01
    assert result.effect_size < 0.3


def test_same_seed_same_result():
    rng = np.random.default_rng(8)
    # More than 4,000 pooled rows and 256 columns: every random step of the PCA runs.
    reference, current = rng.normal(size=(3900, 260)), rng.normal(size=(300, 260))
    first = drift_test(reference, current, random_state=42)
    second = drift_test(reference, current, random_state=42)
    assert first == second


def test_float32_matches_float64():
    rng = np.random.default_rng(9)
    reference = rng.normal(size=(300, 20))
    current = rng.normal(size=(300, 20)) + 0.1
    single = drift_test(reference.astype(np.float32), current.astype(np.float32), random_state=1)
    double = drift_test(reference, current, random_state=1)
    assert single.statistic == pytest.approx(double.statistic, rel=1e-3)
    assert single.bandwidth == pytest.approx(double.bandwidth, rel=1e-5)


def test_constant_windows_give_p_value_one():
    constant = np.ones((30, 4))
    for method in ("mmd", "mmd_exact"):
        result = drift_test(constant, constant, method=method, random_state=0)
        assert result.p_value == 1.0
        assert result.bandwidth == 1.0
        assert not result.drift


def test_single_feature_and_integer_input():
    rng = np.random.default_rng(10)
    reference = rng.integers(0, 10, size=(200, 1))
    current = rng.integers(3, 13, size=(200, 1))
    result = drift_test(reference, current, random_state=0)
    assert result.n_components == 1
    assert result.p_value < 0.01


def test_result_fields_and_to_dict():
    rng = np.random.default_rng(12)
    result = drift_test(
        rng.normal(size=(60, 3)), rng.normal(size=(40, 3)), alpha=0.1, random_state=0
    )
    assert isinstance(result, DriftResult)
    assert (result.n_reference, result.n_current, result.n_components) == (60, 40, 3)
    assert result.method == "mmd"
    assert result.n_permutations == 200
    assert result.alpha == 0.1
    assert result.drift == (result.p_value < 0.1)
    assert 1 / 201 <= result.p_value <= 1.0
    values = json.loads(json.dumps(result.to_dict()))
    assert values["drift"] == result.drift
    assert values["p_value"] == result.p_value
    assert values["component_p_values"] == []
