"""Projector bookmarks that carry a precomputed 2-D or 3-D layout.

Stock TensorBoard shows a layout it did not compute only through a bookmark (a
``State`` in the front end): ``selectedProjection`` ``"umap"`` with one
``{"umap-0": x, "umap-1": y[, "umap-2": z]}`` entry per point. The front end reads
several fields without a null check, so every field it writes is written here.
The user still has to click the bookmark: the projector lists server bookmarks but
does not apply one on load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from latentlens.export.metadata import NO_COLOR


def check_layout(layout: object, n_points: int) -> np.ndarray:
    """Validate a layout; return it as float64, shape (n, 2) or (n, 3). No side effect."""
    if hasattr(layout, "detach") and hasattr(layout, "cpu"):
        layout = layout.detach().cpu().numpy()
    array = np.asarray(layout)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"layout must be a numeric array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise ValueError(
            f"layout must have shape (n, 2) or (n, 3), got {array.shape}; pass the "
            f"coordinates returned by UMAP(n_components=2 or 3).fit_transform"
        )
    if array.shape[0] != n_points:
        raise ValueError(
            f"layout has {array.shape[0]} rows but values has {n_points}; give one "
            f"coordinate row per point"
        )
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array).all(axis=1)))
        raise ValueError(
            f"layout contains NaN or infinite coordinates in {bad} rows; fix or drop those "
            f"points before exporting"
        )
    if array.size and np.abs(array).max() > np.finfo(np.float32).max:
        raise ValueError(
            "layout contains coordinates beyond the float32 range the projector keeps; "
            "rescale the layout"
        )
    return array.astype(np.float64)


def projections_json(layout: np.ndarray) -> str:
    """JSON array with one ``{"umap-0": x, "umap-1": y[, "umap-2": z]}`` object per point."""
    keys = [f'"umap-{axis}":' for axis in range(layout.shape[1])]
    # float32 precision is what the projector keeps; %.9g round-trips a float32.
    text = np.char.mod("%.9g", layout.astype(np.float32))
    parts = []
    for row in text:
        pairs = (key + value for key, value in zip(keys, row, strict=True))
        parts.append("{" + ",".join(pairs) + "}")
    return "[" + ",".join(parts) + "]"


def bookmarks_json(
    layout: np.ndarray,
    *,
    n_features: int,
    color_columns: Sequence[tuple[str, bool]],
    label_column: str,
    search_column: str,
    layout_name: str,
    neighbors: int,
    min_dist: float,
) -> str:
    """Return the bookmarks file: one ``State`` per colour column (or one uncoloured State).

    Parameters
    ----------
    layout : ndarray of float, shape (n, 2) or (n, 3)
    n_features : int
        Width of the embedded vectors (``dataSetDimensions``).
    color_columns : sequence of (str, bool)
        ``(column name, categorical)`` for every column worth colouring by.
    label_column, search_column : str
        Metadata column used for point labels and for the search box.
    layout_name : str
        Shown in each bookmark's label, e.g. ``"umap"``.
    neighbors, min_dist : int, float
        The layout's settings, shown in the projector's UMAP panel.
    """
    n_points, n_components = layout.shape
    is_3d = n_components == 3
    projections = projections_json(layout)
    choices = list(color_columns) or [(NO_COLOR, False)]

    states = []
    for column, categorical in choices:
        coloured = "" if column == NO_COLOR else f", colour by {column}"
        state = {
            "label": f"{layout_name} {n_components}-D{coloured}",
            "isSelected": False,  # the panel deselects, not loads, a selected State on click
            "dataSetDimensions": [n_points, n_features],
            "selectedProjection": "umap",
            "umapIs3d": is_3d,
            "umapNeighbors": int(neighbors),
            "umapMinDist": float(min_dist),
            "tSNEIteration": 0,
            "tSNEPerplexity": 30,
            "tSNELearningRate": 10,
            "tSNEis3d": is_3d,
            "pcaComponentDimensions": [0, 1, 2] if is_3d else [0, 1],
            "customSelectedSearchByMetadataOption": search_column,
            "customXLeftText": "",
            "customXLeftRegex": False,
            "customXRightText": "",
            "customXRightRegex": False,
            "customYUpText": "",
            "customYUpRegex": False,
            "customYDownText": "",
            "customYDownRegex": False,
            "selectedPoints": [],
            "selectedColorOptionName": column,
            "forceCategoricalColoring": bool(categorical),
            "selectedLabelOption": label_column,
        }
        head = json.dumps(state, ensure_ascii=False)
        states.append(head[:-1] + ',"projections":' + projections + "}")
    return "[" + ",\n".join(states) + "]\n"
