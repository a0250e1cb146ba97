"""Scatter pictures, scalars and images, read back through TensorBoard's data provider."""

from __future__ import annotations

import numpy as np
import pytest

from latentlens.export import ProjectorWriter, read_projector, render_scatter
from latentlens.export.images import LEGEND_WIDTH, category_colors, gradient_colors

WHITE, FRAME = (255, 255, 255), (200, 200, 200)


def plot_colors(picture: np.ndarray, size: int) -> set[tuple[int, int, int]]:
    area = picture[1 : size - 1, 1 : size - 1].reshape(-1, 3)
    return {tuple(int(c) for c in color) for color in np.unique(area, axis=0)} - {WHITE, FRAME}


def test_categorical_scatter_uses_one_colour_per_label(rng):
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]])
    labels = np.repeat(np.arange(5), 40)
    layout = centers[labels] + rng.normal(scale=0.5, size=(200, 2))
    picture = render_scatter(layout, labels, categorical=True, size=200)
    assert picture.shape == (200, 200 + LEGEND_WIDTH, 3)
    assert picture.dtype == np.uint8
    palette = {tuple(int(c) for c in color) for color in category_colors(5)}
    assert plot_colors(picture, 200) == palette
    # Label 3 sits top right, label 0 bottom left (y grows upwards).
    top_right = {tuple(int(c) for c in color) for color in picture[10:60, 140:190].reshape(-1, 3)}
    assert tuple(int(c) for c in category_colors(5)[3]) in top_right
    assert tuple(int(c) for c in category_colors(5)[0]) not in top_right


def test_score_scatter_runs_from_min_to_max_colour():
    layout = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    picture = render_scatter(
        layout, [0.0, 10.0, np.nan], categorical=False, size=64, point_radius=0
    )
    low, high = (tuple(int(c) for c in gradient_colors(np.array([v]))[0]) for v in (0.0, 1.0))
    assert plot_colors(picture, 64) == {low, high, (190, 190, 190)}


def test_scalars_images_and_maps_read_back(tmp_path, rng):
    layout = rng.normal(size=(50, 2))
    labels = rng.integers(0, 3, 50)
    photo = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    with ProjectorWriter(tmp_path, run="s") as writer:
        for step in range(3):
            writer.add_scalar("drift/fc1/p_value", 0.1 * step, step=step)
            writer.add_scalar("outliers/fc1/share", np.float32(0.5), step=step)
        writer.add_image("photo", photo, step=1)
        drawn = writer.add_map_image(
            "maps/fc1", layout, color_values=labels, step=2, categorical=True
        )
    result = read_projector(tmp_path)
    scalars = result["scalars"]["s"]
    assert scalars["drift/fc1/p_value"] == [(s, pytest.approx(0.1 * s)) for s in range(3)]
    assert scalars["outliers/fc1/share"] == [(s, 0.5) for s in range(3)]
    images = result["images"]["s"]
    ((step, got),) = images["photo"]
    assert step == 1
    np.testing.assert_array_equal(got, photo)
    ((step, got),) = images["maps/fc1"]
    assert step == 2
    np.testing.assert_array_equal(got, drawn)
    np.testing.assert_array_equal(
        drawn,
        render_scatter(layout, labels, categorical=True, title="maps/fc1 step 2"),
    )
    # A run with only scalars and images has no projector data, and the tab stays off.
    assert result["runs"] == []
    assert result["enabled"] is False
