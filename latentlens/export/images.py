"""Map pictures: a scatter of a 2-D layout coloured by label or score, drawn without matplotlib.

Points are stamped with numpy (fast for 100,000 points); Pillow draws the frame, the
legend and encodes the PNG that TensorBoard's Images dashboard shows.
"""

from __future__ import annotations

import colorsys
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LEGEND_WIDTH = 150
MAX_LEGEND_ENTRIES = 20
_BACKGROUND = (255, 255, 255)
_MISSING = (190, 190, 190)
# Gradient stops (dark blue -> teal -> yellow), perceptually ordered for scores.
_GRADIENT = np.array(
    [[45, 20, 90], [40, 80, 150], [30, 140, 140], [90, 190, 90], [250, 220, 40]], np.float64
)


def category_colors(count: int) -> np.ndarray:
    """``count`` distinct RGB colours (uint8, shape (count, 3)), hues a golden angle apart."""
    colors = []
    for i in range(count):
        hue = (i * 0.618033988749895) % 1.0
        lightness = 0.45 if i % 2 == 0 else 0.6
        colors.append(colorsys.hls_to_rgb(hue, lightness, 0.75))
    return np.round(np.array(colors, np.float64).reshape(-1, 3) * 255).astype(np.uint8)


def gradient_colors(fraction: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 on the gradient, shape (n, 3)."""
    position = np.clip(fraction, 0.0, 1.0) * (len(_GRADIENT) - 1)
    low = np.floor(position).astype(int).clip(0, len(_GRADIENT) - 2)
    weight = (position - low)[:, None]
    return np.round(_GRADIENT[low] * (1 - weight) + _GRADIENT[low + 1] * weight).astype(np.uint8)


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an int number of pixels, got {size!r}")
    if not 32 <= size <= 8192:
        raise ValueError(f"size must be between 32 and 8192 pixels, got {size}; try size=512")
    return int(size)


def check_layout_2d(layout: object) -> np.ndarray:
    """Validate a layout for drawing: finite, shape (n, 2) or (n, 3) (third axis ignored)."""
    if hasattr(layout, "detach") and hasattr(layout, "cpu"):
        layout = layout.detach().cpu().numpy()
    array = np.asarray(layout)
    if array.dtype.kind not in "iuf" or array.ndim != 2 or array.shape[1] not in (2, 3):
        raise ValueError(
            f"layout must be a numeric array of shape (n, 2) or (n, 3), got shape "
            f"{array.shape} and dtype {array.dtype}"
        )
    if array.shape[0] == 0:
        raise ValueError("layout has no points; pass at least one row")
    if not np.all(np.isfinite(array)):
        raise ValueError("layout contains NaN or infinite coordinates; drop those points first")
    return array[:, :2].astype(np.float64)


def _point_colors(color_values, n_points: int, categorical: bool):
    """Return (colours uint8 (n, 3), legend entries) for the points."""
    if color_values is None:
        return np.tile(np.array([[40, 80, 150]], np.uint8), (n_points, 1)), []
    if hasattr(color_values, "detach") and hasattr(color_values, "cpu"):
        color_values = color_values.detach().cpu().numpy()
    if isinstance(color_values, (str, bytes)) or not hasattr(color_values, "__len__"):
        raise TypeError(
            f"color_values must be a sequence with one value per point, got "
            f"{type(color_values).__name__}"
        )
    if len(color_values) != n_points:
        raise ValueError(
            f"color_values has {len(color_values)} values but layout has {n_points} rows; "
            f"give one value per point"
        )
    if categorical:
        keys = ["" if v is None else str(v) for v in np.asarray(color_values, dtype=object)]
        present = sorted({k for k in keys if k and k != "nan"}, key=_natural_key)
        palette = category_colors(len(present))
        lookup = {k: palette[i] for i, k in enumerate(present)}
        colors = np.array([lookup.get(k, _MISSING) for k in keys], np.uint8).reshape(-1, 3)
        legend = [(k, tuple(int(c) for c in lookup[k])) for k in present]
        return colors, legend

    try:
        values = np.asarray(color_values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            "color_values must be numbers when categorical=False; pass categorical=True for labels"
        ) from error
    if values.ndim != 1:
        raise ValueError(f"color_values must be 1-D, got shape {values.shape}")
    finite = np.isfinite(values)
    colors = np.tile(np.array([_MISSING], np.uint8), (n_points, 1))
    legend = []
    if finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
        span = high - low if high > low else 1.0
        colors[finite] = gradient_colors((values[finite] - low) / span)
        legend = [("max", high), ("min", low)]
    return colors, legend


def _natural_key(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def render_scatter(
    layout: object,
    color_values: object = None,
    *,
    categorical: bool,
    size: int = 512,
    point_radius: int | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Draw a 2-D layout as a scatter picture, coloured by label or by score.

    Parameters
    ----------
    layout : array-like of float, shape (n, 2) or (n, 3)
        Point coordinates; a third column is ignored. Each axis is scaled to the plot.
    color_values : sequence of length n, optional
        Labels (``categorical=True``; up to 20 are named in the legend) or numbers
        (``categorical=False``; min -> max gradient). ``None``/NaN are drawn grey.
    categorical : bool
        How to read ``color_values``.
    size : int, default=512
        Height of the picture and width of the plot area, in pixels (32..8192).
    point_radius : int, optional
        Dot radius in pixels; by default it shrinks as the point count grows.
    title : str, optional
        Text drawn at the top left.

    Returns
    -------
    ndarray of uint8, shape (size, size + 150, 3) with a legend, else (size, size, 3)
        RGB picture, channels last, ready for `ProjectorWriter.add_image`.

    Raises
    ------
    TypeError, ValueError
        On a layout that is not (n, 2)/(n, 3) finite numbers, a colour count that differs
        from n, non-numeric scores with ``categorical=False`` or a size out of range.

    Examples
    --------
    >>> import numpy as np
    >>> picture = render_scatter(np.random.default_rng(0).normal(size=(100, 2)),
    ...                          np.arange(100) % 3, categorical=True, size=128)
    >>> picture.shape, picture.dtype
    ((128, 278, 3), dtype('uint8'))
    """
    coords = check_layout_2d(layout)
    size = _check_size(size)
    n_points = coords.shape[0]
    colors, legend = _point_colors(color_values, n_points, bool(categorical))
    if point_radius is None:
        point_radius = 1
        if n_points <= 20_000:
            point_radius = 2
        if n_points <= 2_000:
            point_radius = 3
    if (
        isinstance(point_radius, bool)
        or not isinstance(point_radius, (int, np.integer))
        or not 0 <= point_radius <= 20
    ):
        raise ValueError(f"point_radius must be an int in [0, 20], got {point_radius!r}")

    margin = max(point_radius + 2, size // 32)
    plot = np.full((size, size, 3), _BACKGROUND, np.uint8)
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    usable = size - 1 - 2 * margin
    pixels = margin + np.round((coords - low) / span * usable).astype(np.int64)
    x, y = pixels[:, 0], size - 1 - pixels[:, 1]  # y up

    # Draw in a fixed shuffled order so no class systematically covers another.
    order = np.random.default_rng(0).permutation(n_points)
    x, y, colors = x[order], y[order], colors[order]
    for dy in range(-point_radius, point_radius + 1):
        for dx in range(-point_radius, point_radius + 1):
            if dx * dx + dy * dy > point_radius * point_radius + point_radius:
                continue
            plot[np.clip(y + dy, 0, size - 1), np.clip(x + dx, 0, size - 1)] = colors

    width = size + (LEGEND_WIDTH if legend else 0)
    image = Image.new("RGB", (width, size), _BACKGROUND)
    image.paste(Image.fromarray(plot), (0, 0))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle([0, 0, size - 1, size - 1], outline=(200, 200, 200))
    if title:
        draw.text((6, 4), title, fill=(0, 0, 0), font=font)
    if legend:
        _draw_legend(draw, font, legend, size, categorical=bool(categorical))
    return np.asarray(image, dtype=np.uint8).copy()


def _draw_legend(draw, font, legend, size: int, *, categorical: bool) -> None:
    left, line = size + 10, 14
    if categorical:
        shown = legend[:MAX_LEGEND_ENTRIES]
        for i, (label, color) in enumerate(shown):
            top = 8 + i * line
            if top + line > size:
                break
            draw.rectangle([left, top + 2, left + 9, top + 11], fill=color)
            draw.text((left + 14, top), label[:18], fill=(0, 0, 0), font=font)
        hidden = len(legend) - len(shown)
        if hidden > 0 and 8 + len(shown) * line + line <= size:
            draw.text((left, 8 + len(shown) * line), f"+{hidden} more", fill=(0, 0, 0), font=font)
        return
    high, low = legend[0][1], legend[1][1]
    bar_top, bar_bottom = 24, max(40, size - 24)
    steps = max(2, bar_bottom - bar_top)
    ramp = gradient_colors(np.linspace(1.0, 0.0, steps))
    for i, color in enumerate(ramp):
        draw.line([left, bar_top + i, left + 14, bar_top + i], fill=tuple(int(c) for c in color))
    draw.text((left + 20, bar_top - 6), _short(high), fill=(0, 0, 0), font=font)
    draw.text((left + 20, bar_bottom - 8), _short(low), fill=(0, 0, 0), font=font)


def _short(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.2e}" if math.isfinite(value) else str(value)


def encode_png(image: object) -> tuple[bytes, int, int, int]:
    """Validate an image and encode it as PNG.

    Parameters
    ----------
    image : array-like, shape (h, w), (h, w, 1), (h, w, 3) or (h, w, 4)
        uint8, or float in [0, 1]. Channels last.

    Returns
    -------
    png : bytes
    height, width, channels : int
    """
    if hasattr(image, "detach") and hasattr(image, "cpu"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"image must have shape (h, w), (h, w, 3) or (h, w, 4) with channels last, got "
            f"{array.shape}; for a CHW tensor pass image.transpose(1, 2, 0)"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"image must be at least 1 x 1 pixel, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError("float images must be finite and lie in [0, 1]; or pass uint8")
        array = np.round(array * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255:
            raise TypeError(f"image must be uint8 or float in [0, 1], got dtype {array.dtype}")
        array = array.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    channels = 1 if array.ndim == 2 else array.shape[2]
    return buffer.getvalue(), array.shape[0], array.shape[1], channels
