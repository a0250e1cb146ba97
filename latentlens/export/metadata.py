"""Per-point metadata as the projector reads it: one TSV row per point, never shifted.

The projector's metadata parser has no escaping. A tab or line break inside a value
shifts or splits a row, and a blank line is skipped (losing a point). A header exists
exactly when the first line has a tab. A single ``nan`` or ``inf`` turns a numeric
column into text. This module cleans values so none of that can happen:

- tabs, line breaks (``\\n``, ``\\r`` and the other Unicode line separators) and other
  control characters become spaces; leading and trailing spaces are removed;
- ``None``, float NaN and infinities become empty fields (read as missing);
- in a column whose other values are all numbers, the strings ``nan``/``inf`` are
  emptied too, so the column stays numeric;
- an ``index`` column (the original row number) is always written, so no line is
  ever blank and a header is written whenever the user gives at least one column.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence

import numpy as np

INDEX_COLUMN = "index"
NO_COLOR = "No color map"
MAX_CATEGORIES = 50  # the projector's colour map has 50 categories

# Every character Python's str.splitlines() breaks on, plus tab and other C0/C1 controls.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Finite decimals that JavaScript's Number() accepts (after trimming), plus hex.
_JS_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+")
_INTEGER = re.compile(r"[+-]?\d+")
_NON_FINITE_WORDS = {
    "nan",
    "+nan",
    "-nan",
    "inf",
    "+inf",
    "-inf",
    "infinity",
    "+infinity",
    "-infinity",
}


def clean_text(value: str) -> str:
    """Replace tabs, line breaks and control characters with a space and strip the ends."""
    return _UNSAFE.sub(" ", value).strip()


def _cell(value: object) -> str:
    """Format one metadata value as a TSV field (before column-level cleaning)."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return clean_text(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return repr(number) if math.isfinite(number) else ""
    return clean_text(str(value))


def is_js_number(text: str) -> bool:
    """True when the projector's front end (JavaScript ``isNaN``) reads ``text`` as a number."""
    text = text.strip()
    return bool(_JS_NUMBER.fullmatch(text)) or text in ("Infinity", "+Infinity", "-Infinity")


def check_metadata(metadata: object, n_points: int) -> dict[str, Sequence]:
    """Validate a metadata mapping (column -> sequence of ``n_points`` values); no side effect.

    Raises
    ------
    TypeError
        If ``metadata`` is not a mapping, a key is not a str or a column is not a sequence.
    ValueError
        If a column name is empty, contains a tab or line break, is the reserved ``index``,
        or a column's length differs from ``n_points``.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) and hasattr(metadata, "columns"):
        metadata = dict(metadata.items())  # a data frame: column name -> column
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"metadata must be a mapping from column name to a sequence of values, got "
            f"{type(metadata).__name__}; pass e.g. metadata={{'label': labels}}"
        )
    columns: dict[str, Sequence] = {}
    for name, column in metadata.items():
        if not isinstance(name, str):
            raise TypeError(f"metadata column names must be str, got {name!r}")
        if not name.strip() or _UNSAFE.search(name):
            raise ValueError(
                f"metadata column name {name!r} is empty or contains a tab, line break or "
                f"control character, which would break the TSV header; rename the column"
            )
        if name.strip() != name:
            raise ValueError(
                f"metadata column name {name!r} has leading or trailing spaces; "
                f"use {name.strip()!r}"
            )
        if name == INDEX_COLUMN or name == NO_COLOR:
            raise ValueError(
                f"metadata column name {name!r} is reserved (latentlens writes the original "
                f"row number as {INDEX_COLUMN!r}); rename your column, e.g. 'sample_id'"
            )
        if hasattr(column, "detach") and hasattr(column, "cpu"):  # torch tensor, not imported
            column = column.detach().cpu().numpy()
        if isinstance(column, (str, bytes)) or not hasattr(column, "__len__"):
            raise TypeError(
                f"metadata[{name!r}] must be a sequence with one value per point (list, "
                f"tuple or 1-D array), got {type(column).__name__}"
            )
        if isinstance(column, np.ndarray) and column.ndim != 1:
            raise ValueError(
                f"metadata[{name!r}] must be 1-D with one value per point, got an array "
                f"of shape {column.shape}"
            )
        if len(column) != n_points:
            raise ValueError(
                f"metadata[{name!r}] has {len(column)} values but values has {n_points} "
                f"rows; give exactly one metadata value per point"
            )
        if not isinstance(column, (list, tuple, np.ndarray)):
            column = list(column)  # e.g. a pandas Series, whose [] looks up labels
        columns[name] = column
    return columns


def clean_column(column: Sequence, rows: np.ndarray | None = None) -> list[str]:
    """Turn one column into TSV-safe strings, keeping one entry per point.

    Parameters
    ----------
    column : sequence
        Values of any of str, bytes, int, float, bool, None (numpy scalars too).
    rows : ndarray of int, optional
        Keep only these row positions (a subsample), in this order.
    """
    if rows is not None:
        if isinstance(column, np.ndarray):
            column = column[rows]
        else:
            column = [column[int(i)] for i in rows]
    cells = [_cell(value) for value in column]
    filled = [cell for cell in cells if cell]
    non_finite = [cell for cell in filled if cell.lower() in _NON_FINITE_WORDS]
    if non_finite and all(
        cell.lower() in _NON_FINITE_WORDS or is_js_number(cell) for cell in filled
    ):
        cells = ["" if cell.lower() in _NON_FINITE_WORDS else cell for cell in cells]
    return cells


def metadata_tsv(columns: Mapping[str, list[str]], index: np.ndarray) -> str:
    """Return the metadata file text: header (when there are user columns) and one row per point.

    User columns come first and ``index`` last, so the projector labels points by the
    first user column by default. With no user column the file is the bare index, one
    number per line and no header (a single column never has a header).
    """
    index_cells = [str(int(i)) for i in index]
    if not columns:
        return "".join(f"{cell}\n" for cell in index_cells)
    names = [*columns, INDEX_COLUMN]
    lines = ["\t".join(names)]
    cell_lists = [*columns.values(), index_cells]
    lines.extend("\t".join(row) for row in zip(*cell_lists, strict=True))
    return "\n".join(lines) + "\n"


def color_columns(columns: Mapping[str, list[str]]) -> list[tuple[str, bool]]:
    """Columns the projector offers for colouring, as ``(name, categorical)`` pairs.

    Mirrors the projector's rule: at most 50 distinct values gives categorical colours,
    a numeric column with more gives a gradient, a text column with more is not offered.
    Columns with fewer than two distinct values, and integer identifiers (a different
    integer on every point), are left out because their colours show nothing.
    """
    found = []
    for name, cells in columns.items():
        distinct = {cell for cell in cells if cell}
        if len(distinct) < 2:
            continue
        if len(distinct) <= MAX_CATEGORIES:
            found.append((name, True))
        elif all(is_js_number(cell) for cell in distinct):
            filled = sum(1 for cell in cells if cell)
            if len(distinct) == filled and all(_INTEGER.fullmatch(cell) for cell in distinct):
                continue  # an identifier: every point its own integer, nothing to see
            found.append((name, False))
    return found
