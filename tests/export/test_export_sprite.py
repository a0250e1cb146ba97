"""Sprite thumbnails: area-averaged resizing checked against exact block means."""

from __future__ import annotations

import numpy as np

from latentlens.export.sprite import area_weights, resize_images, thumbnail_size


def test_area_weights_rows_sum_to_one():
    for size_in, size_out in [(28, 25), (460, 455), (9, 4), (7, 7)]:
        weights = area_weights(size_in, size_out)
        assert weights.shape == (size_out, size_in)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        # Each input pixel contributes one pixel's worth of area in total.
        np.testing.assert_allclose(weights.sum(axis=0) * size_in / size_out, 1.0)


def test_resize_by_two_is_block_mean(rng):
    grey = rng.integers(0, 256, size=(7, 16, 12), dtype=np.uint8)
    expected = np.rint(grey.reshape(7, 8, 2, 6, 2).astype(np.float64).mean(axis=(2, 4)))
    np.testing.assert_array_equal(resize_images(grey, 8, 6), expected)

    rgb = rng.integers(0, 256, size=(5, 9, 6, 3), dtype=np.uint8)
    expected = np.rint(rgb.reshape(5, 3, 3, 2, 3, 3).astype(np.float64).mean(axis=(2, 4)))
    np.testing.assert_array_equal(resize_images(rgb, 3, 2), expected)


def test_resize_keeps_flat_images_flat():
    flat = np.broadcast_to(np.arange(10, dtype=np.uint8)[:, None, None] * 25, (10, 28, 28))
    resized = resize_images(flat, 25, 25, chunk_pixels=3 * 28 * 28)
    np.testing.assert_array_equal(resized, np.broadcast_to(flat[:, :25, :25], (10, 25, 25)))


def test_thumbnail_size_stays_within_8192():
    assert thumbnail_size(100_000, 28, 28) == (317, 25, 25)
    assert thumbnail_size(300, 460, 460) == (18, 455, 455)
    assert thumbnail_size(5, 4, 7) == (3, 4, 7)
    per_row, height, width = thumbnail_size(100_000, 64, 32)
    assert per_row * height <= 8192
    assert per_row * width <= 8192


def test_dense_and_sparse_resize_agree(rng, monkeypatch):
    import latentlens.export.sprite as sprite

    images = rng.integers(0, 256, size=(6, 30, 22, 3), dtype=np.uint8)
    dense = resize_images(images, 13, 9)
    monkeypatch.setattr(sprite, "DENSE_RESIZE_MAX_PX", 0)
    sparse = resize_images(images, 13, 9)
    assert np.abs(dense.astype(int) - sparse).max() <= 1  # float32 rounding at .5
