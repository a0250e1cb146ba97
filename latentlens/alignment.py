"""Keep successive maps comparable: match points by id, then align with Procrustes.

UMAP layouts are defined only up to rotation, reflection, translation and scale, so two fits of
nearly the same data can look unrelated. Aligning each new layout onto the previous one on the
points they share removes that freedom and leaves only the movement that the data explains.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes


def match_rows(previous_ids: np.ndarray, current_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return index arrays ``(previous_rows, current_rows)`` of the ids present in both.

    Ids that occur more than once on either side are ignored, because they cannot be matched
    unambiguously.
    """
    previous_ids = np.asarray(previous_ids)
    current_ids = np.asarray(current_ids)
    previous_unique, previous_first, previous_counts = np.unique(
        previous_ids, return_index=True, return_counts=True
    )
    current_unique, current_first, current_counts = np.unique(
        current_ids, return_index=True, return_counts=True
    )
    previous_keep = previous_counts == 1
    current_keep = current_counts == 1
    _, previous_pos, current_pos = np.intersect1d(
        previous_unique[previous_keep], current_unique[current_keep], return_indices=True
    )
    return previous_first[previous_keep][previous_pos], current_first[current_keep][current_pos]


def procrustes_align(
    layout: np.ndarray, target: np.ndarray, *, allow_scaling: bool = True
) -> tuple[np.ndarray, float]:
    """Rotate, reflect, translate and optionally scale ``layout`` onto ``target``.

    Parameters
    ----------
    layout, target : ndarray of shape (n, k)
        Rows are the same points in the same order.
    allow_scaling : bool, default=True
        Also fit one global scale factor.

    Returns
    -------
    aligned : ndarray of shape (n, k)
        The aligned copy of ``layout``.
    residual : float
        Root-mean-square distance between aligned and target points.

    Raises
    ------
    ValueError
        If the shapes differ or fewer than ``k + 1`` rows are given.
    """
    layout = np.asarray(layout, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if layout.shape != target.shape or layout.ndim != 2:
        raise ValueError(
            "layout and target must be 2-D arrays of one shape, "
            f"got {layout.shape} and {target.shape}"
        )
    if layout.shape[0] <= layout.shape[1]:
        raise ValueError(
            f"Procrustes alignment needs more than {layout.shape[1]} shared points, "
            f"got {layout.shape[0]}"
        )
    aligned = apply_alignment(layout, fit_alignment(layout, target, allow_scaling=allow_scaling))
    residual = float(np.sqrt(np.mean(np.sum((aligned - target) ** 2, axis=1))))
    return aligned, residual


def fit_alignment(
    layout: np.ndarray, target: np.ndarray, *, allow_scaling: bool = True
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Fit the similarity transform that maps ``layout`` closest to ``target`` in least squares.

    Returns ``(layout_mean, rotation, scale, target_mean)``; :func:`apply_alignment` applies it.
    """
    layout_mean = layout.mean(axis=0)
    target_mean = target.mean(axis=0)
    centered = layout - layout_mean
    centered_target = target - target_mean
    rotation, singular_sum = orthogonal_procrustes(centered, centered_target)
    norm = float(np.sum(centered**2))
    scale = float(singular_sum / norm) if allow_scaling and norm > 0 else 1.0
    return layout_mean, rotation, scale, target_mean


def apply_alignment(
    layout: np.ndarray, alignment: tuple[np.ndarray, np.ndarray, float, np.ndarray]
) -> np.ndarray:
    """Apply a transform from :func:`fit_alignment` to every row of ``layout``."""
    layout_mean, rotation, scale, target_mean = alignment
    return (np.asarray(layout, dtype=np.float64) - layout_mean) @ rotation * scale + target_mean


def map_spread(layout: np.ndarray) -> float:
    """Return the root-mean-square distance of the points from their centroid."""
    layout = np.asarray(layout, dtype=np.float64)
    return float(np.sqrt(np.mean(np.sum((layout - layout.mean(axis=0)) ** 2, axis=1))))


def relative_displacement(previous: np.ndarray, current: np.ndarray) -> float:
    """Return the mean distance a point moved between two aligned maps, over the map's spread.

    0 means no point moved; 1 means points moved on average as far as the typical distance of a
    point from the centre of the map.
    """
    previous = np.asarray(previous, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    spread = map_spread(previous)
    if spread == 0.0:
        return 0.0
    return float(np.mean(np.linalg.norm(current - previous, axis=1)) / spread)
