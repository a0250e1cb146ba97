"""Procrustes alignment and id matching between successive maps."""

import numpy as np
import pytest

from latentlens.alignment import (
    map_spread,
    match_rows,
    procrustes_align,
    relative_displacement,
)


def test_procrustes_recovers_known_similarity():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 2))
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    reflection = np.diag([1.0, -1.0])
    layout = 3.5 * target @ rotation @ reflection + np.array([7.0, -2.0])

    aligned, residual = procrustes_align(layout, target)

    np.testing.assert_allclose(aligned, target, atol=1e-10)
    assert residual < 1e-10


def test_procrustes_without_scaling_keeps_size():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(30, 2))
    aligned, _ = procrustes_align(2.0 * target, target, allow_scaling=False)
    assert map_spread(aligned) == pytest.approx(2.0 * map_spread(target))


def test_procrustes_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        procrustes_align(np.zeros((5, 2)), np.zeros((4, 2)))


def test_procrustes_needs_enough_points():
    with pytest.raises(ValueError, match="more than 2 shared points"):
        procrustes_align(np.zeros((2, 2)), np.zeros((2, 2)))


def test_match_rows_pairs_shared_unique_ids():
    previous = np.array(["a", "b", "c", "d", "d"])
    current = np.array(["c", "x", "a", "d"])

    previous_rows, current_rows = match_rows(previous, current)

    pairs = sorted(zip(previous[previous_rows], current[current_rows], strict=True))
    assert pairs == [("a", "a"), ("c", "c")]


def test_relative_displacement_scale():
    layout = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert relative_displacement(layout, layout) == 0.0
    assert relative_displacement(layout, layout + [0.5, 0.0]) == pytest.approx(0.5)
