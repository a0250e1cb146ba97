"""UMAP estimator: determinism, transform, persistence, and every bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse

from latentlens.umap import UMAP, UMAPParameterWarning, graph, layout


@pytest.fixture(scope="module")
def clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5.0, size=(4, 8))
    labels = rng.integers(0, 4, 400)
    X = (centres[labels] + rng.normal(size=(400, 8))).astype(np.float32)
    return X, labels


@pytest.fixture(scope="module")
def fitted(clusters):
    X, _ = clusters
    return UMAP(n_neighbors=10, n_epochs=60, random_state=0).fit(X)


def test_fit_attributes(fitted, clusters):
    X, _ = clusters
    assert fitted.embedding_.shape == (400, 2)
    assert fitted.embedding_.dtype == np.float32
    assert scipy.sparse.isspmatrix_csr(fitted.graph_)
    assert abs(fitted.graph_ - fitted.graph_.T).max() == 0
    assert fitted.a_ == pytest.approx(1.577, abs=1e-3)
    assert fitted.b_ == pytest.approx(0.895, abs=1e-3)
    assert fitted.n_features_in_ == 8


def test_seeded_runs_identical(clusters, fitted):
    X, _ = clusters
    again = UMAP(n_neighbors=10, n_epochs=60, random_state=0).fit_transform(X)
    np.testing.assert_array_equal(again, fitted.embedding_)
    other = UMAP(n_neighbors=10, n_epochs=60, random_state=1).fit_transform(X)
    assert not np.array_equal(other, fitted.embedding_)


def test_seeded_forest_runs_identical(clusters):
    X, _ = clusters
    first = UMAP(n_neighbors=10, n_epochs=30, random_state=4, knn_method="forest").fit(X)
    second = UMAP(n_neighbors=10, n_epochs=30, random_state=4, knn_method="forest").fit(X)
    np.testing.assert_array_equal(first.embedding_, second.embedding_)


def test_graph_search_transform_batch_invariant(clusters):
    from latentlens.umap import graph

    X, _ = clusters
    model = UMAP(n_neighbors=10, n_epochs=30, random_state=4, knn_method="forest").fit(X)
    new = X[:50] + 0.1
    whole = model.transform(new)
    np.testing.assert_array_equal(model.transform(new[10:13]), whole[10:13])
    queries = graph.prepare_rows(new, "euclidean", model._center)
    found, _ = graph.graph_search(
        queries, model._train_rows, model._knn_indices, model._landmarks, 10, "euclidean"
    )
    exact, _ = graph.exact_search(queries, model._train_rows, 10, block_rows=256)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.9


def test_transform_is_batch_invariant(fitted, clusters):
    X, _ = clusters
    rng = np.random.default_rng(5)
    new = X[:60] + rng.normal(scale=0.3, size=(60, 8)).astype(np.float32)
    whole = fitted.transform(new)
    assert whole.shape == (60, 2)
    np.testing.assert_array_equal(fitted.transform(new[:7]), whole[:7])
    np.testing.assert_array_equal(fitted.transform(new[40:41]), whole[40:41])
    shuffled = fitted.transform(new[::-1])
    np.testing.assert_array_equal(shuffled[::-1], whole)


def test_large_transform_is_batch_invariant(fitted, clusters):
    X, _ = clusters
    rng = np.random.default_rng(6)
    # 1,100 rows x 10 neighbours: several search blocks and a layout above
    # PARALLEL_MIN_EDGES, so both run on every thread.
    new = X[rng.integers(0, 400, 1100)] + rng.normal(scale=0.3, size=(1100, 8)).astype(np.float32)
    assert new.shape[0] > graph.QUERY_BLOCK_ROWS
    assert new.shape[0] * fitted.n_neighbors >= layout.PARALLEL_MIN_EDGES
    whole = fitted.transform(new)
    np.testing.assert_array_equal(fitted.transform(new[600:605]), whole[600:605])
    np.testing.assert_array_equal(fitted.transform(new[::-1])[::-1], whole)


def test_transform_lands_near_training_cluster(fitted, clusters):
    X, labels = clusters
    new = fitted.transform(X[:100] + 0.05)
    centroids = np.stack([fitted.embedding_[labels == c].mean(0) for c in range(4)])
    nearest = np.argmin(((new[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == labels[:100]) >= 0.95


def test_save_load_roundtrip(fitted, clusters, tmp_path):
    X, _ = clusters
    path = tmp_path / "model.npz"
    fitted.save(path)
    loaded = UMAP.load(path)
    np.testing.assert_array_equal(loaded.embedding_, fitted.embedding_)
    assert abs(loaded.graph_ - fitted.graph_).max() == 0
    np.testing.assert_array_equal(loaded.transform(X[:20]), fitted.transform(X[:20]))
    assert loaded.get_params() == fitted.get_params()
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_save_numpy_scalar_settings(clusters, tmp_path):
    X, _ = clusters
    model = UMAP(n_neighbors=np.int64(10), n_epochs=np.int32(5), random_state=0).fit(X)
    model.save(tmp_path / "scalars.npz")
    loaded = UMAP.load(tmp_path / "scalars.npz")
    assert loaded.n_neighbors == 10
    assert loaded.n_epochs == 5


def test_save_without_data_rejects_transform(fitted, clusters, tmp_path):
    X, _ = clusters
    path = tmp_path / "slim.npz"
    fitted.save(path, include_data=False)
    loaded = UMAP.load(path)
    np.testing.assert_array_equal(loaded.embedding_, fitted.embedding_)
    with pytest.raises(ValueError, match="saved without its training rows"):
        loaded.transform(X[:2])


def test_load_rejects_foreign_file(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, values=np.zeros(3))
    with pytest.raises(ValueError, match="not a latentlens UMAP file"):
        UMAP.load(path)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "correlation", "manhattan"])
def test_metrics_separate_clusters(metric, clusters):
    X, labels = clusters
    X = X + 20.0  # keep rows away from the origin, where cosine has no direction
    embedding = UMAP(n_neighbors=10, n_epochs=40, metric=metric, random_state=0).fit_transform(X)
    assert np.isfinite(embedding).all()
    centroids = np.stack([embedding[labels == c].mean(0) for c in range(4)])
    nearest = np.argmin(((embedding[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == labels) >= 0.9


@pytest.mark.parametrize("init", ["spectral", "pca", "random"])
def test_inits(init, clusters):
    X, _ = clusters
    embedding = UMAP(n_neighbors=10, n_epochs=20, init=init, random_state=0).fit_transform(X)
    assert np.isfinite(embedding).all()


def test_array_init_warm_start(fitted, clusters):
    X, _ = clusters
    model = UMAP(n_neighbors=10, n_epochs=0, init=fitted.embedding_, random_state=0).fit(X)
    start = fitted.embedding_ - fitted.embedding_.min(axis=0)
    start *= 10.0 / start.max()
    np.testing.assert_allclose(model.embedding_, start, rtol=1e-5, atol=1e-5)


def test_disconnected_graph_no_sklearn_warning():
    rng = np.random.default_rng(3)
    parts = [rng.normal(size=(60, 3)) + shift for shift in (0.0, 1000.0, -1000.0)]
    X = np.vstack(parts).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = UMAP(n_neighbors=8, n_epochs=50, random_state=0).fit(X)
    assert np.isfinite(model.embedding_).all()
    centres = np.stack([model.embedding_[i * 60 : (i + 1) * 60].mean(0) for i in range(3)])
    spreads = [model.embedding_[i * 60 : (i + 1) * 60].std(0).max() for i in range(3)]
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)]
    assert min(gaps) > 2 * max(spreads)


def test_duplicates_share_a_position():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(100, 5)).astype(np.float32)
    X = np.vstack([base, base[:30], base[:30]])
    model = UMAP(n_neighbors=10, n_epochs=50, random_state=0).fit(X)
    assert np.isfinite(model.embedding_).all()
    np.testing.assert_array_equal(model.embedding_[100:130], model.embedding_[:30])
    np.testing.assert_array_equal(model.embedding_[130:160], model.embedding_[:30])
    assert model.graph_.shape == (160, 160)
    assert model.graph_[100, 0] == 1.0


def test_duplicate_rows_graph_matches_full_search():
    # The search runs once per distinct row. The graph must still equal the one from an
    # exact search over every row, with copies at distance 0, as in umap-learn.
    rng = np.random.default_rng(7)
    base = rng.normal(size=(150, 6)).astype(np.float32)
    X = np.vstack([base, base[:40], base[:40], base[10:20]])
    model = UMAP(n_neighbors=10, n_epochs=20, random_state=0, knn_method="exact").fit(X)
    indices, distances = graph.nearest_neighbors(X, 10, method="exact")
    expected = graph.fuzzy_simplicial_set(indices, distances, X.shape[0])
    assert model.graph_.shape == expected.shape
    np.testing.assert_array_equal(model.graph_.toarray() > 0, expected.toarray() > 0)
    # Distances from BLAS differ in the last float32 bits between the two searches.
    np.testing.assert_allclose(model.graph_.toarray(), expected.toarray(), atol=1e-5)


def test_constant_data_warns_and_stacks():
    X = np.ones((20, 4), dtype=np.float32)
    with pytest.warns(UMAPParameterWarning, match="all 20 rows of X are identical"):
        model = UMAP(n_neighbors=5).fit(X)
    assert np.array_equal(model.embedding_, np.zeros((20, 2), np.float32))
    assert np.array_equal(model.transform(X[:3] + 1.0), np.zeros((3, 2), np.float32))


def test_few_samples_adapt_n_neighbors():
    X = np.random.default_rng(5).normal(size=(12, 3))
    message = r"n_neighbors=15 is not below .*\(12\); using n_neighbors=11"
    with pytest.warns(UMAPParameterWarning, match=message):
        model = UMAP(n_neighbors=15, random_state=0).fit(X)
    assert model.n_neighbors_ == 11
    assert np.isfinite(model.embedding_).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_input_dtypes_match_float32(dtype, clusters):
    X, _ = clusters
    X = np.round(X[:150]).astype(dtype)
    reference = UMAP(n_neighbors=10, n_epochs=30, random_state=0).fit_transform(
        X.astype(np.float32)
    )
    result = UMAP(n_neighbors=10, n_epochs=30, random_state=0).fit_transform(X)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, reference)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
            ValueError,
            "NaN or infinite values in 1 row",
        ),
        (
            np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
            ValueError,
            "NaN or infinite",
        ),
        (np.full((4, 2), 1e300), ValueError, "beyond the float32 range"),
        (np.zeros(5), ValueError, "must be 2-D"),
        (np.array([["a", "b"]]), TypeError, "needs real numbers"),
        (scipy.sparse.eye(5, format="csr"), TypeError, "sparse matrix"),
        (np.zeros((0, 3)), ValueError, "at least one row"),
    ],
)
def test_bad_data_rejected(value, error, message):
    with pytest.raises(error, match=message):
        UMAP().fit(value)


def test_single_row_and_too_few_rows_rejected():
    with pytest.raises(ValueError, match=r"n_components=2 needs at least n_components \+ 2 = 4"):
        UMAP().fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="X has 3"):
        UMAP().fit(np.random.default_rng(0).normal(size=(3, 3)))


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"n_neighbors": 1}, ValueError, "n_neighbors=1 is out of range"),
        ({"n_neighbors": 2.5}, TypeError, "n_neighbors=2.5 must be an integer"),
        ({"n_components": 0}, ValueError, "n_components=0"),
        ({"metric": "chebyshev"}, ValueError, "metric='chebyshev' is not supported"),
        ({"min_dist": 2.0}, ValueError, "min_dist=2.0 must not exceed spread"),
        ({"spread": 0.0}, ValueError, "spread=0.0 is out of range"),
        ({"init": "laplacian"}, ValueError, "init='laplacian' is not supported"),
        ({"init": 3}, TypeError, "init must be a string or an array"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate=-1.0"),
        ({"random_state": "seed"}, TypeError, "random_state='seed'"),
        ({"set_op_mix_ratio": 1.5}, ValueError, "set_op_mix_ratio=1.5"),
        ({"knn_method": "annoy"}, ValueError, "knn_method='annoy'"),
        ({"init": np.zeros((3, 2))}, ValueError, r"init array has shape \(3, 2\)"),
    ],
)
def test_bad_params_rejected(params, error, message, clusters):
    X, _ = clusters
    with pytest.raises(error, match=message):
        UMAP(**params).fit(X)


def test_transform_checks(fitted):
    with pytest.raises(ValueError, match="X has 3 features but the model was fitted on 8"):
        fitted.transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not fitted yet"):
        UMAP().transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(np.full((1, 8), np.nan))


def test_precomputed_knn(clusters):
    from latentlens.umap.graph import nearest_neighbors

    X, _ = clusters
    knn = nearest_neighbors(X, 10)
    direct = UMAP(n_neighbors=10, n_epochs=30, random_state=0).fit_transform(X)
    given = UMAP(n_neighbors=10, n_epochs=30, random_state=0, precomputed_knn=knn).fit_transform(X)
    np.testing.assert_array_equal(given, direct)
    with pytest.raises(ValueError, match="precomputed_knn arrays have shapes"):
        UMAP(precomputed_knn=(knn[0][:5], knn[1][:5])).fit(X)


def test_sklearn_protocol(fitted):
    from sklearn.base import clone

    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "embedding_")
    copy.set_params(n_neighbors=7)
    assert copy.n_neighbors == 7
    with pytest.raises(ValueError, match="'k' is not a parameter of UMAP"):
        copy.set_params(k=3)
    assert "n_neighbors=10" in repr(fitted)


def test_array_init_kept_without_rescaling():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(60, 5)).astype(np.float32)
    start = rng.normal(scale=25.0, size=(60, 2)).astype(np.float32) + 100.0

    kept = UMAP(init=start, rescale_init=False, n_epochs=0).fit(data).embedding_
    scaled = UMAP(init=start, n_epochs=0).fit(data).embedding_

    np.testing.assert_array_equal(kept, start)
    assert scaled.min() >= 0.0
    assert scaled.max() == pytest.approx(10.0)


def test_rescale_init_must_be_bool():
    data = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(TypeError, match="rescale_init must be True or False"):
        UMAP(rescale_init="no").fit(data)


def test_read_only_input_is_not_written():
    data = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    data[0, 0] = -0.0
    data.setflags(write=False)

    UMAP(n_neighbors=5, random_state=0, n_epochs=10).fit(data)

    assert np.signbit(data[0, 0])
