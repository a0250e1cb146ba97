"""Input checks of the UMAP entry points. Each raises before any work is done."""

from __future__ import annotations

import numbers

import numpy as np

from latentlens.umap.graph import KNN_METHODS, METRICS

INITS = ("spectral", "pca", "random")


class UMAPParameterWarning(UserWarning):
    """A setting was adapted to the data (for example n_neighbors to a small data set)."""


def check_data(X, name="X"):
    """Return ``X`` as a C-contiguous float32 2-D array, or raise TypeError/ValueError."""
    if hasattr(X, "tocsr") or hasattr(X, "toarray"):
        raise TypeError(
            f"{name} is a sparse matrix ({type(X).__name__}); UMAP takes dense arrays. "
            f"Pass {name}.toarray() if it fits in memory."
        )
    try:
        array = np.asarray(X)
    except Exception as err:  # noqa: BLE001 - any conversion failure is the same user error
        raise TypeError(f"{name} could not be converted to a numeric array: {err}") from err
    if array.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} has dtype {array.dtype}; UMAP needs real numbers (float16, float32, "
            "float64 or integers). Convert the data to a float array first."
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features) but has shape {array.shape}; "
            f"use {name}.reshape(1, -1) for a single sample or {name}.reshape(-1, 1) for a "
            "single feature."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has shape {array.shape}; it needs at least one row and column.")

    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = ~np.isfinite(array)
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {rows.size} row(s), the first at row "
            f"{rows[0]}; remove or impute them before calling UMAP."
        )
    largest = float(np.abs(array).max()) if array.dtype.itemsize > 4 else 0.0
    if largest > float(np.finfo(np.float32).max):
        raise ValueError(
            f"{name} has values beyond the float32 range (max |x| = {largest:.3g}); "
            "rescale the data before calling UMAP."
        )
    # -0.0 and 0.0 must hash alike when duplicates are found by bit pattern. The addition
    # makes a new array, so the caller's data (possibly read-only) is never written to.
    return np.ascontiguousarray(array, dtype=np.float32) + np.float32(0.0)


def _check_number(name, value, low=None, high=None, integer=False, low_open=False):
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name}={value!r} must be {kind}.")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name}={value} is out of range; it must be {bound}.")
    if high is not None and value > high:
        raise ValueError(f"{name}={value} is out of range; it must be <= {high}.")


def check_params(model):
    """Check every constructor setting of a :class:`~latentlens.umap.UMAP`."""
    _check_number("n_neighbors", model.n_neighbors, low=2, integer=True)
    _check_number("n_components", model.n_components, low=1, integer=True)
    _check_number("spread", model.spread, low=0, low_open=True)
    _check_number("min_dist", model.min_dist, low=0)
    if model.min_dist > model.spread:
        raise ValueError(
            f"min_dist={model.min_dist} must not exceed spread={model.spread}; lower "
            "min_dist or raise spread."
        )
    if model.n_epochs is not None:
        _check_number("n_epochs", model.n_epochs, low=0, integer=True)
    if model.transform_n_epochs is not None:
        _check_number("transform_n_epochs", model.transform_n_epochs, low=0, integer=True)
    _check_number("learning_rate", model.learning_rate, low=0, low_open=True)
    _check_number("negative_sample_rate", model.negative_sample_rate, low=0, integer=True)
    _check_number("repulsion_strength", model.repulsion_strength, low=0)
    _check_number("local_connectivity", model.local_connectivity, low=0, low_open=True)
    _check_number("set_op_mix_ratio", model.set_op_mix_ratio, low=0, high=1)

    if not isinstance(model.rescale_init, (bool, np.bool_)):
        raise TypeError(f"rescale_init must be True or False, got {model.rescale_init!r}.")
    if model.metric not in METRICS:
        raise ValueError(
            f"metric={model.metric!r} is not supported; use one of {', '.join(METRICS)}."
        )
    if model.knn_method not in KNN_METHODS:
        raise ValueError(
            f"knn_method={model.knn_method!r} is not supported; use one of "
            f"{', '.join(KNN_METHODS)}."
        )

    init = model.init
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(
                f"init={init!r} is not supported; use 'spectral', 'pca', 'random' or an "
                "array of shape (n_samples, n_components)."
            )
    elif not hasattr(init, "shape") and not isinstance(init, (list, tuple)):
        raise TypeError(
            f"init must be a string or an array of shape (n_samples, n_components), not "
            f"{type(init).__name__}."
        )
    state = model.random_state
    if state is not None and not isinstance(
        state, (numbers.Integral, np.random.RandomState, np.random.Generator)
    ):
        raise TypeError(
            f"random_state={state!r} must be None, an int, a numpy RandomState or Generator."
        )
    if isinstance(state, numbers.Integral) and not 0 <= state < 2**63:
        raise ValueError(f"random_state={state} must be in [0, 2**63).")


def check_init_array(init, n_samples, n_components):
    """Return an array init as float64 ``(n_samples, n_components)`` or raise ValueError."""
    array = np.asarray(init, dtype=np.float64)
    if array.shape != (n_samples, n_components):
        raise ValueError(
            f"init array has shape {array.shape} but the data needs ({n_samples}, "
            f"{n_components}); pass one starting position per row of X."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("init array contains NaN or infinite values; pass finite positions.")
    return array


def check_precomputed_knn(knn, n_samples):
    """Return a precomputed ``(indices, distances)`` pair as int32/float32 arrays."""
    if not isinstance(knn, (tuple, list)) or len(knn) != 2:
        raise TypeError(
            "precomputed_knn must be a tuple (indices, distances) of two (n_samples, k) "
            "arrays, as returned by latentlens.umap.graph.nearest_neighbors."
        )
    indices = np.asarray(knn[0])
    distances = np.asarray(knn[1])
    if indices.ndim != 2 or indices.shape != distances.shape or indices.shape[0] != n_samples:
        raise ValueError(
            f"precomputed_knn arrays have shapes {indices.shape} and {distances.shape}; "
            f"both must be ({n_samples}, k), one row per row of X."
        )
    if indices.dtype.kind not in "iu":
        raise TypeError(f"precomputed_knn indices have dtype {indices.dtype}; use integers.")
    if indices.max() >= n_samples or indices.min() < -1:
        raise ValueError(
            f"precomputed_knn indices must be in [-1, {n_samples - 1}] (-1 for a missing "
            f"neighbour) but span [{indices.min()}, {indices.max()}]."
        )
    if not np.all(np.isfinite(distances)) or distances.min() < 0:
        raise ValueError("precomputed_knn distances must be finite and non-negative.")
    return np.ascontiguousarray(indices, np.int32), np.ascontiguousarray(distances, np.float32)
