"""Initial layouts: spectral (with disconnected graphs handled here), PCA and random.

Each strategy checks its input, computes, and returns float32 ``(n, dim)`` coordinates
with the largest absolute coordinate equal to 10, the scale the SGD expects.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

logger = logging.getLogger(__name__)

# Components of at most this many vertices are solved with a dense eigendecomposition.
DENSE_EIGEN_MAX = 600


class SpectralFallbackWarning(UserWarning):
    """The spectral initialisation failed for part of the graph and used random positions."""


def _scale_to(layout, extent=10.0):
    layout = np.asarray(layout, dtype=np.float64)
    layout = layout - layout.mean(axis=0)
    largest = np.abs(layout).max()
    if largest > 0:
        layout *= extent / largest
    return layout


def _fix_signs(vectors):
    """Flip each column so that its largest-magnitude entry is positive (deterministic)."""
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def spectral_component(graph, dim, rng):
    """Spectral layout of one connected graph: eigenvectors 2..dim+1 of its normalised
    Laplacian ``I - D^-1/2 A D^-1/2`` (the largest of the normalised adjacency)."""
    n = graph.shape[0]
    if n <= dim + 1:
        return rng.uniform(-1.0, 1.0, size=(n, dim))
    degrees = np.asarray(graph.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degrees, 1e-12))
    scaling = scipy.sparse.diags(inv_sqrt)
    adjacency = (scaling @ graph @ scaling).astype(np.float64)
    k = dim + 1
    if n <= DENSE_EIGEN_MAX:
        values, vectors = np.linalg.eigh(adjacency.toarray())
        order = np.argsort(values)[::-1][:k]
    else:
        start = np.sqrt(degrees) + 1e-3 * rng.standard_normal(n)
        try:
            values, vectors = scipy.sparse.linalg.eigsh(
                adjacency,
                k=k,
                which="LA",
                ncv=max(2 * k + 1, int(np.sqrt(n))),
                tol=1e-4,
                v0=start,
                maxiter=5 * n,
            )
        except (scipy.sparse.linalg.ArpackError, scipy.sparse.linalg.ArpackNoConvergence) as err:
            warnings.warn(
                f"spectral initialisation did not converge on a component of {n} points "
                f"({err}); those points start at random positions instead. Pass "
                "init='pca' to avoid the spectral step.",
                SpectralFallbackWarning,
                stacklevel=3,
            )
            return rng.uniform(-1.0, 1.0, size=(n, dim))
        order = np.argsort(values)[::-1][:k]
    # The top eigenvector is sqrt(degree) (constant after rescaling), so it carries no layout.
    chosen = vectors[:, order[1:]] * inv_sqrt[:, None]
    return _fix_signs(chosen)


def _component_centres(n_groups, dim, centroids, rng):
    """Place component centres: +-unit vectors when few, else PCA of data centroids."""
    if n_groups <= 2 * dim:
        centres = np.zeros((n_groups, dim))
        for g in range(n_groups):
            centres[g, g // 2] = 1.0 if g % 2 == 0 else -1.0
        return centres
    if centroids is not None:
        centred = centroids - centroids.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        centres = centred @ vt[:dim].T
        if centres.shape[1] < dim:
            centres = np.hstack([centres, np.zeros((n_groups, dim - centres.shape[1]))])
    else:
        centres = rng.standard_normal((n_groups, dim))
    # Spread coincident centres apart a little so every component gets its own place.
    centres += 1e-3 * rng.standard_normal(centres.shape) * (np.abs(centres).max() + 1.0)
    return centres


def spectral_layout(graph, dim, rng, data=None):
    """Spectral layout of a fuzzy graph, one component at a time when it is disconnected.

    Components are placed at separate centres (see :func:`_component_centres`) and
    each is laid out spectrally inside a box of half the gap to the nearest centre.
    Components too small for an eigenproblem get random positions in their box.

    Parameters
    ----------
    graph : scipy.sparse matrix of shape (n, n)
        Symmetric fuzzy graph.
    dim : int
        Output dimension.
    rng : numpy.random.Generator
    data : ndarray of shape (n, n_features) or None
        Input rows, used to place the components' centres when there are many.

    Returns
    -------
    ndarray of shape (n, dim), float64, max absolute coordinate 10.
    """
    graph = scipy.sparse.csr_matrix(graph)
    n_groups, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    if n_groups == 1:
        return _scale_to(spectral_component(graph, dim, rng))

    logger.info("graph has %d connected components; laying them out separately", n_groups)
    centroids = None
    if data is not None:
        counts = np.bincount(labels, minlength=n_groups).astype(np.float64)
        # Sums per component as a sparse indicator product: np.add.at took 0.1 s here
        # on 20,000 x 128 rows, half of the whole initialisation.
        members = scipy.sparse.csr_matrix(
            (np.ones(labels.size), (labels, np.arange(labels.size))),
            shape=(n_groups, labels.size),
        )
        centroids = np.asarray(members @ np.asarray(data, dtype=np.float64)) / counts[:, None]
    centres = _component_centres(n_groups, dim, centroids, rng)
    gaps = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(gaps, np.inf)
    half_gap = 0.5 * gaps.min(axis=1)
    layout = np.empty((graph.shape[0], dim))
    for g in range(n_groups):
        members = np.flatnonzero(labels == g)
        sub = graph[members][:, members]
        part = spectral_component(sub, dim, rng)
        part = part - part.mean(axis=0)
        largest = np.abs(part).max()
        if largest > 0:
            part *= 0.5 * half_gap[g] / largest
        layout[members] = centres[g] + part
    return _scale_to(layout)


def pca_layout(data, dim):
    """First ``dim`` principal components of ``data`` (covariance eigenvectors)."""
    data = np.asarray(data, dtype=np.float64)
    centred = data - data.mean(axis=0)
    if data.shape[1] <= 2048:
        values, vectors = np.linalg.eigh(centred.T @ centred)
        top = vectors[:, np.argsort(values)[::-1][:dim]]
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        top = vt[:dim].T
    layout = centred @ _fix_signs(top)
    if layout.shape[1] < dim:
        layout = np.hstack([layout, np.zeros((layout.shape[0], dim - layout.shape[1]))])
    return _scale_to(layout)


def random_layout(n, dim, rng):
    """Uniform positions in ``[-10, 10]^dim``."""
    return rng.uniform(-10.0, 10.0, size=(n, dim))
