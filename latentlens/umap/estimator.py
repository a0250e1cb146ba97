"""The :class:`UMAP` estimator: checks, drives graph, init and layout, transform, save/load."""

from __future__ import annotations

import inspect
import json
import logging
import os
import secrets
import tempfile
import warnings

import numpy as np
import scipy.sparse

from latentlens.umap import _graph_kernels, _validation, layout, spectral
from latentlens.umap import graph as graph_module
from latentlens.umap._threads import single_thread_below
from latentlens.umap._validation import UMAPParameterWarning

logger = logging.getLogger(__name__)

_FORMAT = "latentlens.umap/1"

# Rows times neighbours from which transform's graph kernels use every thread.
TRANSFORM_PARALLEL_MIN = 5_000


def _seed_from(random_state):
    if random_state is None:
        return secrets.randbits(63)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    return int(random_state)


def _json_scalar(value):
    """Convert numpy scalars (for example ``n_neighbors=np.int64(15)``) for json.dumps."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"setting value {value!r} of type {type(value).__name__} cannot be saved")


def _unique_rows(X):
    """Return ``(first_rows, inverse)``: the first row of each distinct row, and per row
    the index of its distinct row. Rows are compared by hash, then verified exactly."""
    hashes = _graph_kernels.hash_rows(X)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    first = first[order]
    inverse = rank[inverse.ravel()]
    if not np.array_equal(X[first][inverse], X):
        # A hash collision between different rows: fall back to an exact comparison.
        _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        first = first[order]
        inverse = rank[inverse.ravel()]
    return first.astype(np.int64), inverse.astype(np.int64)


def _expand_knn(knn, inverse, n_neighbors):
    """Expand the kNN table of the distinct rows to all rows (see
    :func:`_graph_kernels.expand_knn`)."""
    indices, distances = knn
    order = np.argsort(inverse, kind="stable")
    starts = np.zeros(indices.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(inverse, minlength=indices.shape[0]), out=starts[1:])
    full_indices = np.empty((inverse.size, n_neighbors), dtype=np.int32)
    full_distances = np.empty((inverse.size, n_neighbors), dtype=np.float32)
    _graph_kernels.expand_knn(
        np.ascontiguousarray(indices, dtype=np.int32),
        np.ascontiguousarray(distances, dtype=np.float32),
        inverse,
        order,
        starts,
        full_indices,
        full_distances,
    )
    return full_indices, full_distances


def _group_means(embedding, inverse, n_groups):
    """Return the mean position of each distinct row's copies, so duplicates land together."""
    counts = np.bincount(inverse, minlength=n_groups).astype(np.float64)[:, None]
    sums = np.zeros((n_groups, embedding.shape[1]))
    for column in range(embedding.shape[1]):
        sums[:, column] = np.bincount(inverse, weights=embedding[:, column], minlength=n_groups)
    return (sums / counts).astype(np.float32)


def _expand_graph(graph, first, inverse):
    """Lift a graph on distinct rows to all rows: each duplicate is linked with weight 1
    to the first occurrence of its row, which carries the distinct row's edges."""
    n = inverse.size
    coo = graph.tocoo()
    rows = [first[coo.row]]
    cols = [first[coo.col]]
    vals = [coo.data]
    duplicates = np.flatnonzero(first[inverse] != np.arange(n))
    if duplicates.size:
        owners = first[inverse[duplicates]]
        rows += [duplicates, owners]
        cols += [owners, duplicates]
        vals += [np.ones(duplicates.size, np.float32)] * 2
    full = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n),
        dtype=np.float32,
    )
    full.sort_indices()
    return full


class UMAP:
    """Uniform Manifold Approximation and Projection, with numba kernels.

    The parameter names follow umap-learn and the methods follow scikit-learn, so that
    ``from latentlens.umap import UMAP`` replaces ``from umap import UMAP``.

    Parameters
    ----------
    n_neighbors : int, default=15
        Size of the local neighbourhood (the point itself included). Larger values keep
        more global structure. Lowered, with a :class:`UMAPParameterWarning`, when the
        data has no more distinct rows than this.
    n_components : int, default=2
        Dimension of the embedding.
    metric : {"euclidean", "cosine", "correlation", "manhattan"}, default="euclidean"
        Distance in the input space.
    min_dist : float, default=0.1
        Minimum distance between embedded points, in units of ``spread``.
    spread : float, default=1.0
        Scale of the embedded points.
    n_epochs : int or None, default=None
        Layout epochs; None picks by size (500 up to 10,000 rows, else 200, as umap-learn).
    learning_rate : float, default=1.0
        Initial SGD step, decayed linearly to 0.
    init : {"spectral", "pca", "random"} or array of shape (n_samples, n_components)
        Start positions. An array (for example a previous embedding, to warm-start) is
        shifted and scaled uniformly to fit ``[0, 10]`` and keeps its shape, unless
        ``rescale_init`` is False.
    rescale_init : bool, default=True
        Fit an array ``init`` into ``[0, 10]``. Pass False to start from the array as given:
        a previous embedding of this estimator is already at the scale the layout settles
        at, so a short, gentle run (lower ``learning_rate``, fewer ``n_epochs``) then moves
        points only as far as the data requires.
    negative_sample_rate : int, default=5
        Negative samples per positive edge sample.
    repulsion_strength : float, default=1.0
        Weight (gamma) of the negative samples.
    local_connectivity : float, default=1.0
        Nearest neighbours each point is assumed fully connected to.
    set_op_mix_ratio : float, default=1.0
        1.0 for the fuzzy union of the directed graphs, 0.0 for their intersection.
    random_state : int, RandomState, Generator or None, default=None
        Seed. With a seed, two fits on the same data give identical output, and all
        cores are still used.
    verbose : bool, default=False
        Log progress at INFO level and show a progress bar during the layout.
    precomputed_knn : tuple of (indices, distances) or None, default=None
        A kNN graph of the rows of ``X`` (as returned by
        :func:`latentlens.umap.graph.nearest_neighbors`); the search is skipped.
        ``transform`` still searches the training rows with ``metric``.
    knn_method : {"auto", "exact", "forest", "pynndescent"}, default="auto"
        kNN search (see :func:`latentlens.umap.graph.nearest_neighbors`); "auto" is
        exact (BLAS) up to ``latentlens.umap.graph.EXACT_MAX_ROWS`` rows and an
        approximate random projection forest with neighbour descent above.
    transform_n_epochs : int or None, default=None
        Epochs for new points in :meth:`transform`; None uses
        ``max(30, min(50, n_epochs // 6))`` with ``n_epochs`` the training epochs.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components), float32
        The embedding of the training rows.
    graph_ : scipy.sparse.csr_matrix of shape (n_samples, n_samples), float32
        Symmetric fuzzy graph. A duplicate row is linked (weight 1) only to the first
        occurrence of its row, which carries the edges of the distinct row.
    a_, b_ : float
        Parameters of the embedding similarity ``1 / (1 + a d^(2b))``.
    n_neighbors_ : int
        The number of neighbours used (``n_neighbors`` unless the data was too small).
    n_epochs_ : int
        The number of layout epochs run.
    n_features_in_ : int

    Notes
    -----
    Duplicate rows are fitted once and share one position. The fitted model keeps the
    distinct training rows so that :meth:`transform` can search them; ``save`` can
    leave them out.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X = load_digits().data
    >>> embedding = UMAP(random_state=0).fit_transform(X)
    >>> embedding.shape, embedding.dtype
    ((1797, 2), dtype('float32'))
    """

    def __init__(
        self,
        n_neighbors=15,
        n_components=2,
        *,
        metric="euclidean",
        min_dist=0.1,
        spread=1.0,
        n_epochs=None,
        learning_rate=1.0,
        init="spectral",
        rescale_init=True,
        negative_sample_rate=5,
        repulsion_strength=1.0,
        local_connectivity=1.0,
        set_op_mix_ratio=1.0,
        random_state=None,
        verbose=False,
        precomputed_knn=None,
        knn_method="auto",
        transform_n_epochs=None,
    ):
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.metric = metric
        self.min_dist = min_dist
        self.spread = spread
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.init = init
        self.rescale_init = rescale_init
        self.negative_sample_rate = negative_sample_rate
        self.repulsion_strength = repulsion_strength
        self.local_connectivity = local_connectivity
        self.set_op_mix_ratio = set_op_mix_ratio
        self.random_state = random_state
        self.verbose = verbose
        self.precomputed_knn = precomputed_knn
        self.knn_method = knn_method
        self.transform_n_epochs = transform_n_epochs

    # scikit-learn estimator protocol ---------------------------------------------------

    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep=True):
        """Return the constructor settings as a dict (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor settings by name (scikit-learn protocol); returns self."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{name!r} is not a parameter of UMAP; valid ones are {', '.join(valid)}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults[name]
            if isinstance(value, np.ndarray) or value is not default and value != default:
                text = "array" if isinstance(value, np.ndarray) else repr(value)
                changed.append(f"{name}={text}")
        return f"UMAP({', '.join(changed)})"

    def _log(self, message, *args):
        logger.log(logging.INFO if self.verbose else logging.DEBUG, message, *args)

    # fitting -----------------------------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the embedding of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            float16, float32, float64 or integer data; computed in float32.
        y : ignored

        Returns
        -------
        self : UMAP

        Raises
        ------
        TypeError
            If ``X`` is sparse or not numeric, or a setting has the wrong type.
        ValueError
            If ``X`` has NaN or inf, fewer than ``n_components + 2`` rows, or a setting is
            out of range.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 5))
        >>> UMAP(n_neighbors=10, random_state=1).fit(X).embedding_.shape
        (200, 2)
        """
        _validation.check_params(self)
        X = _validation.check_data(X)
        n_samples = X.shape[0]
        if self.n_components >= n_samples - 1:
            raise ValueError(
                f"n_components={self.n_components} needs at least n_components + 2 = "
                f"{self.n_components + 2} samples, but X has {n_samples}; pass more rows "
                "or lower n_components."
            )
        init_array = None
        if not isinstance(self.init, str):
            init_array = _validation.check_init_array(self.init, n_samples, self.n_components)
        knn = None
        if self.precomputed_knn is not None:
            knn = _validation.check_precomputed_knn(self.precomputed_knn, n_samples)

        seed = _seed_from(self.random_state)
        rng = np.random.default_rng(seed)
        self.a_, self.b_ = graph_module.find_ab_params(self.spread, self.min_dist)
        self.n_features_in_ = X.shape[1]

        if knn is None:
            first, inverse = _unique_rows(X)
        else:
            first, inverse = np.arange(n_samples), np.arange(n_samples)
        rows = X[first]
        n_unique = first.size
        if n_unique < n_samples:
            self._log(
                "%d of %d rows are duplicates; each distinct row is fitted once",
                n_samples - n_unique,
                n_samples,
            )

        if n_unique == 1:
            warnings.warn(
                f"all {n_samples} rows of X are identical, so there is nothing to lay out; "
                "every row is placed at the origin.",
                UMAPParameterWarning,
                stacklevel=2,
            )
            self._finish_constant(rows, first, inverse)
            return self

        k = self.n_neighbors
        if knn is not None:
            k = knn[0].shape[1]
        elif n_unique <= k:
            k = max(2, n_unique - 1)
            warnings.warn(
                f"n_neighbors={self.n_neighbors} is not below the number of distinct rows "
                f"({n_unique}); using n_neighbors={k}. Pass more rows or a smaller "
                "n_neighbors to silence this.",
                UMAPParameterWarning,
                stacklevel=2,
            )
        self.n_neighbors_ = k

        if knn is None:
            self._log("searching %d nearest neighbours of %d rows", k, n_unique)
            knn = graph_module.nearest_neighbors(
                rows,
                k,
                metric=self.metric,
                random_state=seed % (2**31),
                method=self.knn_method,
            )
        # The graph and the layout cover every row, duplicates included. The search ran
        # once per distinct row, and its table is expanded to what a search over all rows
        # returns. So a row repeated m times weighs m times, as in umap-learn. A graph on
        # distinct rows cost 0.014 of trustworthiness on MiniLM embeddings of docstrings,
        # of which 30 % are repeats.
        full_knn = knn if n_unique == n_samples else _expand_knn(knn, inverse, k)
        fuzzy = graph_module.fuzzy_simplicial_set(
            full_knn[0],
            full_knn[1],
            n_samples,
            local_connectivity=self.local_connectivity,
            set_op_mix_ratio=self.set_op_mix_ratio,
        )

        n_epochs = (
            self.n_epochs if self.n_epochs is not None else layout.default_n_epochs(n_samples)
        )
        start = self._initial_layout(fuzzy, X, init_array, rng)
        embedding = self._optimize(fuzzy, start, n_epochs, seed)

        self.n_epochs_ = n_epochs
        self._seed = seed
        self._store(rows, _group_means(embedding, inverse, n_unique), first, inverse, fuzzy)
        self._set_query_graph(knn[0], rng)
        return self

    def _set_query_graph(self, knn_indices, rng):
        """Keep the kNN graph and landmark rows that transform searches from, when the
        training set is too large for the exact search."""
        n = self._train_rows.shape[0]
        self._knn_indices = None
        self._landmarks = None
        limit = (
            graph_module.EXACT_MAX_ROWS_MANHATTAN
            if self.metric == "manhattan"
            else graph_module.EXACT_MAX_ROWS
        )
        if self.knn_method == "exact" or (self.knn_method == "auto" and n <= limit):
            return
        self._knn_indices = np.ascontiguousarray(knn_indices, dtype=np.int32)
        n_landmarks = min(n, max(256, int(2 * np.sqrt(n))))
        self._landmarks = np.sort(rng.choice(n, n_landmarks, replace=False)).astype(np.int64)

    def _initial_layout(self, fuzzy, rows, init_array, rng):
        dim = self.n_components
        n = rows.shape[0]
        if init_array is not None:
            start = init_array
            if not self.rescale_init:
                return np.ascontiguousarray(start, dtype=np.float32)
            start = start - start.min(axis=0)
            extent = start.max()
            if extent > 0:
                start = start * (10.0 / extent)
            return start.astype(np.float32)
        if n <= dim + 1 or self.init == "random":
            start = spectral.random_layout(n, dim, rng)
        elif self.init == "pca":
            start = spectral.pca_layout(rows, dim)
        else:
            start = spectral.spectral_layout(fuzzy, dim, rng, data=rows)
        # A little noise separates points that the initialisation put on top of each other.
        start = start + rng.normal(scale=1e-4, size=start.shape)
        low = start.min(axis=0)
        span = start.max(axis=0) - low
        span[span == 0] = 1.0
        return (10.0 * (start - low) / span).astype(np.float32)

    def _optimize(self, fuzzy, start, n_epochs, seed):
        if n_epochs == 0:
            return start
        schedule = layout.edge_schedule(fuzzy, n_epochs, self.negative_sample_rate)
        keys = np.arange(start.shape[0], dtype=np.uint64)
        bar = None
        progress = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_epochs, desc="UMAP layout", unit="epoch")

            def progress(done):
                bar.update(done - bar.n)

        try:
            return layout.optimize_layout(
                start,
                None,
                schedule,
                n_epochs=n_epochs,
                a=self.a_,
                b=self.b_,
                seed=seed,
                vertex_keys=keys,
                gamma=float(self.repulsion_strength),
                initial_alpha=float(self.learning_rate),
                move_tail=True,
                progress=progress,
            )
        finally:
            if bar is not None:
                bar.close()

    def _store(self, rows, embedding, first, inverse, graph):
        """Store the distinct rows and their positions, and ``graph`` over every row."""
        center = None
        if self.metric == "euclidean":
            center = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._center = center
        self._train_rows = graph_module.prepare_rows(rows, self.metric, center)
        self._unique_embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        self._first = first
        self._inverse = inverse
        self.embedding_ = self._unique_embedding[inverse]
        self.graph_ = graph

    def _finish_constant(self, rows, first, inverse):
        self._knn_indices = None
        self._landmarks = None
        self.n_neighbors_ = 1
        self.n_epochs_ = 0
        self._seed = 0
        # Every copy is linked with weight 1 to the first row.
        graph = _expand_graph(scipy.sparse.csr_matrix((1, 1), dtype=np.float32), first, inverse)
        self._store(rows, np.zeros((1, self.n_components), np.float32), first, inverse, graph)

    def fit_transform(self, X, y=None):
        """Fit ``X`` and return ``embedding_`` (float32, ``(n_samples, n_components)``).

        Raises
        ------
        TypeError, ValueError
            As :meth:`fit`.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(100, 4))
        >>> UMAP(n_neighbors=8, random_state=0).fit_transform(X).shape
        (100, 2)
        """
        return self.fit(X).embedding_

    # transform ---------------------------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "embedding_"):
            raise ValueError("this UMAP is not fitted yet; call fit(X) before transform.")
        if getattr(self, "_train_rows", None) is None:
            raise ValueError(
                "this UMAP was saved without its training rows, so it cannot place new "
                "points; save it with include_data=True to use transform after loading."
            )

    def transform(self, X):
        """Place new rows in the fitted embedding; the training embedding stays fixed.

        Each new point is placed independently of the other rows of ``X``: it starts at
        the membership-weighted mean of its neighbours among the training rows and is
        refined by SGD with a random stream keyed on its own values. Identical rows get
        identical positions, whatever batch they come in.

        Parameters
        ----------
        X : array-like of shape (n_new, n_features)

        Returns
        -------
        ndarray of shape (n_new, n_components), float32

        Raises
        ------
        ValueError
            If the model is not fitted, or ``X`` has NaN/inf or the wrong number of
            features.
        TypeError
            If ``X`` is sparse or not numeric.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> model = UMAP(n_neighbors=10, random_state=0).fit(rng.normal(size=(300, 3)))
        >>> model.transform(rng.normal(size=(5, 3))).shape
        (5, 2)
        """
        self._check_fitted()
        X = _validation.check_data(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but the model was fitted on "
                f"{self.n_features_in_}; pass rows with the training features."
            )
        train = self._train_rows
        if train.shape[0] == 1:
            return np.repeat(self._unique_embedding, X.shape[0], axis=0)
        k = min(self.n_neighbors_, train.shape[0])
        queries = graph_module.prepare_rows(X, self.metric, self._center)
        if getattr(self, "_knn_indices", None) is not None:
            indices, distances = graph_module.graph_search(
                queries, train, self._knn_indices, self._landmarks, k, self.metric
            )
        else:
            indices, distances = graph_module.exact_search(
                queries,
                train,
                k,
                metric_code=1 if self.metric == "manhattan" else 0,
                block_rows=graph_module.QUERY_BLOCK_ROWS,
            )
        graph_module.convert_distances(distances, self.metric)
        from latentlens.umap import _layout_kernels

        # The bandwidth search costs about 140 ns per neighbour (2,000 MiniLM rows, one
        # thread), so two threads pay off from a few hundred rows.
        with single_thread_below(X.shape[0] * k, TRANSFORM_PARALLEL_MIN):
            sigma, rho = _graph_kernels.smooth_knn_dist(
                distances, 64, max(0.0, float(self.local_connectivity) - 1.0), 1.0, False
            )
            no_self = np.full(X.shape[0], -1, dtype=np.int32)
            _, cols, weights = _graph_kernels.membership_strengths(
                indices, distances, sigma, rho, no_self
            )
            indptr = np.arange(0, X.shape[0] * k + 1, k, dtype=np.int64)
            start = np.empty((X.shape[0], self.n_components), dtype=np.float32)
            _layout_kernels.weighted_mean_init(indptr, cols, weights, self._unique_embedding, start)
            keys = _graph_kernels.hash_rows(X)

        n_epochs = self.transform_n_epochs
        if n_epochs is None:
            # New points start at the weighted mean of their neighbours, already close
            # to their final place, so a sixth of the training epochs suffices.
            n_epochs = max(30, min(50, self.n_epochs_ // 6))
        if n_epochs == 0:
            return start
        # The edge schedule uses 1.0 as the largest weight (not the batch maximum), so a
        # point's schedule does not depend on the other points of the batch.
        relation = scipy.sparse.csr_matrix(
            (weights, cols, indptr), shape=(X.shape[0], train.shape[0])
        )
        relation.data[relation.data < 1.0 / n_epochs] = 0.0
        relation.eliminate_zeros()
        epochs_per_sample = 1.0 / relation.data.astype(np.float64)
        schedule = {
            "indptr": relation.indptr.astype(np.int64),
            "tails": relation.indices.astype(np.int32),
            "epochs_per_sample": epochs_per_sample,
            "epoch_of_next_sample": epochs_per_sample.copy(),
            "epochs_per_negative_sample": epochs_per_sample / self.negative_sample_rate
            if self.negative_sample_rate > 0
            else np.full_like(epochs_per_sample, 2.0 * n_epochs + 2.0),
        }
        schedule["epoch_of_next_negative_sample"] = schedule["epochs_per_negative_sample"].copy()
        return layout.optimize_layout(
            start,
            self._unique_embedding,
            schedule,
            n_epochs=n_epochs,
            a=self.a_,
            b=self.b_,
            seed=self._seed,
            vertex_keys=keys,
            gamma=float(self.repulsion_strength),
            initial_alpha=float(self.learning_rate) / 4.0,
            move_tail=False,
        )

    # persistence -------------------------------------------------------------------------

    def save(self, path, *, include_data=True):
        """Write the fitted model to ``path`` as a ``.npz`` archive (no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            Destination file. It is written under a temporary name, then renamed.
        include_data : bool, default=True
            Keep the distinct training rows, which :meth:`transform` needs. Without
            them the file holds only settings, embedding and graph.

        Raises
        ------
        ValueError
            If the model is not fitted, or a setting (an array ``init``, a
            ``precomputed_knn``, a random generator) cannot be stored.

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> model = UMAP(n_neighbors=5, random_state=0).fit(np.eye(20))
        >>> path = os.path.join(tempfile.mkdtemp(), "umap.npz")
        >>> model.save(path)
        >>> UMAP.load(path).embedding_.shape
        (20, 2)
        """
        if not hasattr(self, "embedding_"):
            raise ValueError("this UMAP is not fitted yet; call fit(X) before save.")
        params = {}
        for name, value in self.get_params().items():
            if name in ("init", "precomputed_knn", "random_state") and not (
                value is None or isinstance(value, (str, int))
            ):
                value = None if name != "init" else "array"
            params[name] = value
        meta = {
            "format": _FORMAT,
            "params": params,
            "a": self.a_,
            "b": self.b_,
            "n_neighbors": self.n_neighbors_,
            "n_epochs": self.n_epochs_,
            "n_features_in": self.n_features_in_,
            "seed": int(self._seed),
        }
        graph = self.graph_.tocsr()
        arrays = {
            "meta": np.frombuffer(
                json.dumps(meta, default=_json_scalar).encode("utf-8"), dtype=np.uint8
            ),
            "unique_embedding": self._unique_embedding,
            "first": self._first,
            "inverse": self._inverse,
            "graph_data": graph.data,
            "graph_indices": graph.indices,
            "graph_indptr": graph.indptr,
            "graph_shape": np.asarray(graph.shape, dtype=np.int64),
        }
        if include_data and self._train_rows is not None:
            arrays["train_rows"] = self._train_rows
            if self._center is not None:
                arrays["center"] = self._center
            if getattr(self, "_knn_indices", None) is not None:
                arrays["knn_indices"] = self._knn_indices
                arrays["landmarks"] = self._landmarks
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".umap-", suffix=".npz.tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, **arrays)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`.

        Raises
        ------
        ValueError
            If the file is not a latentlens UMAP archive.

        Examples
        --------
        See :meth:`save`.
        """
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            if "meta" not in archive:
                raise ValueError(f"{path} is not a latentlens UMAP file (no 'meta' entry).")
            meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
            if meta.get("format") != _FORMAT:
                raise ValueError(
                    f"{path} has format {meta.get('format')!r}; this version reads {_FORMAT!r}."
                )
            params = dict(meta["params"])
            if params.get("init") == "array":
                params["init"] = "spectral"
            model = cls(**params)
            model.a_, model.b_ = meta["a"], meta["b"]
            model.n_neighbors_ = meta["n_neighbors"]
            model.n_epochs_ = meta["n_epochs"]
            model.n_features_in_ = meta["n_features_in"]
            model._seed = meta["seed"]
            model._unique_embedding = archive["unique_embedding"]
            model._first = archive["first"]
            model._inverse = archive["inverse"]
            fuzzy = scipy.sparse.csr_matrix(
                (archive["graph_data"], archive["graph_indices"], archive["graph_indptr"]),
                shape=tuple(archive["graph_shape"]),
            )
            model._train_rows = archive["train_rows"] if "train_rows" in archive else None
            model._center = archive["center"] if "center" in archive else None
            model._knn_indices = archive["knn_indices"] if "knn_indices" in archive else None
            model._landmarks = archive["landmarks"] if "landmarks" in archive else None
        model.embedding_ = model._unique_embedding[model._inverse]
        if fuzzy.shape[0] == model._inverse.size:
            model.graph_ = fuzzy
        else:
            # Files written before the graph covered duplicates contain it on distinct rows.
            model.graph_ = _expand_graph(fuzzy, model._first, model._inverse)
        return model
