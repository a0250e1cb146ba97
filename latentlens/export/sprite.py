"""Sprite sheets: one thumbnail per point on a square grid of at most 8192 x 8192 pixels.

The projector cuts thumbnails out of the sprite row by row, ``ceil(sqrt(n))`` per row,
each ``single_image_dim`` pixels, and refuses images larger than 8192 px on a side.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

MAX_SPRITE_PX = 8192
DENSE_RESIZE_MAX_PX = 128


def check_images(images: object, n_points: int) -> np.ndarray:
    """Validate per-point images and return them as a uint8 array; no side effect.

    Parameters
    ----------
    images : array-like, shape (n, h, w), (n, h, w, 1), (n, h, w, 3) or (n, h, w, 4)
        uint8 in [0, 255], or float in [0, 1].
    n_points : int
        Number of points the images belong to.

    Returns
    -------
    ndarray of uint8, shape (n, h, w) or (n, h, w, c)

    Raises
    ------
    TypeError
        If the dtype is neither integer nor float.
    ValueError
        On a wrong shape, a count that differs from ``n_points``, or values out of range.
    """
    array = _as_array(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"images must have shape (n, h, w) for grey or (n, h, w, 3) for RGB (or "
            f"(n, h, w, 4) for RGBA), got {array.shape}; move channels last, e.g. "
            f"images.transpose(0, 2, 3, 1)"
        )
    if array.shape[0] != n_points:
        raise ValueError(
            f"images has {array.shape[0]} images but values has {n_points} rows; give one "
            f"image per point"
        )
    if array.shape[1] < 1 or array.shape[2] < 1:
        raise ValueError(f"images must be at least 1 x 1 pixel, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"integer images must lie in [0, 255], got values in [{array.min()}, "
                f"{array.max()}]; rescale them or pass floats in [0, 1]"
            )
        return array.astype(np.uint8)
    if array.dtype.kind != "f":
        raise TypeError(f"images must be uint8 or float in [0, 1], got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("images hold NaN or infinite values; replace them before exporting")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(
            f"float images must lie in [0, 1], got values in [{array.min():.4g}, "
            f"{array.max():.4g}]; divide by 255 or pass uint8 images"
        )
    return np.round(array * 255.0).astype(np.uint8)


def _as_array(images: object) -> np.ndarray:
    if hasattr(images, "detach") and hasattr(
        images, "cpu"
    ):  # a torch tensor, without importing torch
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.dtype == object:
        raise TypeError("images must be a numeric array, got an object array (ragged images?)")
    return array


def thumbnail_size(n_points: int, height: int, width: int) -> tuple[int, int, int]:
    """Return ``(per_row, thumb_height, thumb_width)`` for a sprite of ``n_points`` images.

    Thumbnails keep the input aspect ratio and shrink only when the grid would exceed
    8192 px on a side.
    """
    per_row = max(1, math.ceil(math.sqrt(n_points)))
    scale = min(1.0, MAX_SPRITE_PX / (per_row * height), MAX_SPRITE_PX / (per_row * width))
    thumb_height = max(1, math.floor(height * scale))
    thumb_width = max(1, math.floor(width * scale))
    return per_row, thumb_height, thumb_width


def box_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the area-averaging weights of a 1-D resize as ``(indices, weights)``.

    Output pixel ``j`` covers the input interval ``[j, j + 1) * size_in / size_out``, and
    input pixel ``indices[j, k]`` is weighted by ``weights[j, k]``, the share of its area
    inside that interval (area averaging, as OpenCV's ``INTER_AREA``; Pillow's ``BOX``
    instead gives each input pixel to one output pixel). Both arrays have shape
    (size_out, taps), where taps is the most input pixels one output pixel touches.
    """
    scale = size_in / size_out
    starts = np.arange(size_out)[:, None] * scale
    taps = int(np.ceil(scale)) + 1
    indices = np.floor(starts).astype(np.int64) + np.arange(taps)[None, :]
    overlap = np.minimum(indices + 1, starts + scale) - np.maximum(indices, starts)
    overlap = np.clip(overlap, 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    return np.clip(indices, 0, size_in - 1), weights


def area_weights(size_in: int, size_out: int) -> np.ndarray:
    """Return the dense (size_out, size_in) matrix of `box_weights`."""
    indices, weights = box_weights(size_in, size_out)
    dense = np.zeros((size_out, size_in))
    np.add.at(dense, (np.arange(size_out)[:, None], indices), weights)
    return dense


def _resize_axis(block: np.ndarray, axis: int, size_out: int) -> np.ndarray:
    indices, weights = box_weights(block.shape[axis], size_out)
    shape = [1] * block.ndim
    shape[axis] = size_out
    result = np.zeros(block.shape[:axis] + (size_out,) + block.shape[axis + 1 :], np.float32)
    for tap in range(indices.shape[1]):
        taken = np.take(block, indices[:, tap], axis=axis)
        result += taken * weights[:, tap].astype(np.float32).reshape(shape)
    return result


def resize_images(
    images: np.ndarray, height: int, width: int, chunk_pixels: int = 1 << 20
) -> np.ndarray:
    """Area-average images (n, h, w[, c]) to (n, height, width[, c]) uint8.

    Images go through in chunks of about ``chunk_pixels`` input values, which keeps the
    float32 intermediates small enough to stay in cache.
    """
    chunk = max(1, chunk_pixels // int(np.prod(images.shape[1:])))
    resized = np.empty((images.shape[0], height, width, *images.shape[3:]), np.uint8)
    # Small images: two dense matrix products are fastest. Large ones: a few taps per
    # output pixel, because dense weights cost O(h^2) per image.
    dense = max(images.shape[1], images.shape[2]) <= DENSE_RESIZE_MAX_PX
    if dense:
        row_weights = area_weights(images.shape[1], height).astype(np.float32)
        column_weights_t = area_weights(images.shape[2], width).T.astype(np.float32).copy()
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].astype(np.float32)
        if dense:
            block = np.moveaxis(block, 3, 1) if block.ndim == 4 else block
            block = row_weights @ block @ column_weights_t
            block = np.moveaxis(block, 1, 3) if block.ndim == 4 else block
        else:
            block = _resize_axis(_resize_axis(block, 1, height), 2, width)
        resized[start : start + chunk] = np.clip(np.rint(block), 0, 255)
    return resized


def sprite_png(images: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    """Lay ``images`` out on the projector's square row-major grid and encode as PNG.

    Parameters
    ----------
    images : ndarray of uint8, shape (n, h, w) or (n, h, w, c)

    Returns
    -------
    png : bytes
        The sprite image, at most 8192 px on a side.
    single_image_dim : tuple of int
        ``(thumb_width, thumb_height)``, as ``SpriteMetadata.single_image_dim`` wants it.
    """
    n_points, height, width = images.shape[:3]
    per_row, thumb_height, thumb_width = thumbnail_size(n_points, height, width)
    channels = () if images.ndim == 3 else (images.shape[3],)
    if (thumb_height, thumb_width) != (height, width):
        images = resize_images(images, thumb_height, thumb_width)

    # Pad to a full per_row x per_row grid, then interleave the axes so that tile i
    # lands at grid row i // per_row and column i % per_row.
    padded = np.zeros((per_row * per_row, thumb_height, thumb_width, *channels), np.uint8)
    padded[:n_points] = images
    grid = padded.reshape(per_row, per_row, thumb_height, thumb_width, *channels)
    sheet = grid.swapaxes(1, 2).reshape(per_row * thumb_height, per_row * thumb_width, *channels)

    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue(), (thumb_width, thumb_height)
