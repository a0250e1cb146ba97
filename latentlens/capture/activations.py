"""The plain-data result of a capture: a float32 matrix and per-row metadata columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Activations"]


@dataclass
class Activations:
    """Captured rows of one layer and the metadata that belongs to each row.

    Parameters
    ----------
    values : numpy.ndarray of shape (n_rows, n_features), dtype float32
        One row per sample (or per token when the layer was captured with
        ``pooling="none"``).
    metadata : dict of str to numpy.ndarray
        Columns of length ``n_rows``. A recorder always writes ``"step"`` (the
        training step or epoch given to ``record``) and ``"sample"`` (the running index
        of the input row among all rows the recorder captured, equal across layers for
        the same input row).
        It adds ``"label"``, ``"id"`` and ``"split"`` when they were given, ``"call"``
        when the module ran more than once in a forward pass, ``"token"`` (the token
        position) for ``pooling="none"`` and ``"rank"`` for rows gathered from several
        processes.
    layer : str or None, default=None
        Dotted module name the rows come from.

    Raises
    ------
    ValueError
        If ``values`` is not 2-D or a metadata column does not have ``n_rows`` entries.

    Examples
    --------
    >>> import numpy as np
    >>> acts = Activations(np.zeros((3, 2), np.float32), {"step": np.array([0, 0, 1])})
    >>> len(acts), acts.values.shape
    (3, (3, 2))
    >>> acts.select(acts.metadata["step"] == 1).values.shape
    (1, 2)
    """

    values: np.ndarray
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    layer: str | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.ndim != 2:
            raise ValueError(
                f"values must be a 2-D array (n_rows, n_features), got shape {values.shape}; "
                "reshape it or pool the activations first"
            )
        if values.dtype != np.float32:
            values = values.astype(np.float32)
        self.values = values
        columns = {}
        for name, column in dict(self.metadata).items():
            column = np.asarray(column)
            if column.ndim != 1 or len(column) != len(values):
                raise ValueError(
                    f"metadata column {name!r} must be 1-D with {len(values)} entries "
                    f"(one per row), got shape {column.shape}"
                )
            columns[name] = column
        self.metadata = columns

    @classmethod
    def _from_trusted(
        cls, values: np.ndarray, metadata: dict[str, np.ndarray], layer: str | None
    ) -> Activations:
        """Build without checks, for arrays the recorder has already shaped (hot path)."""
        instance = cls.__new__(cls)
        instance.values = values
        instance.metadata = metadata
        instance.layer = layer
        return instance

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the values and all metadata columns."""
        return int(self.values.nbytes + sum(c.nbytes for c in self.metadata.values()))

    def select(self, rows: np.ndarray | Sequence[int] | slice) -> Activations:
        """Return the rows chosen by a boolean mask, an index array or a slice.

        Parameters
        ----------
        rows : numpy.ndarray of bool of shape (n_rows,), array of int, or slice
            Rows to keep.

        Returns
        -------
        Activations
            A new object that owns copies of the chosen rows (views for a slice).
        """
        return Activations(
            self.values[rows],
            {name: column[rows] for name, column in self.metadata.items()},
            layer=self.layer,
        )

    @classmethod
    def concat(cls, parts: Sequence[Activations], *, layer: str | None = None) -> Activations:
        """Stack several captures of the same layer row-wise.

        Columns missing from some parts are filled: ``"call"`` with 0, other integer
        columns with -1, string columns with ``""`` and float columns with NaN.

        Parameters
        ----------
        parts : sequence of Activations
            Captures with the same number of features.
        layer : str or None, default=None
            Name stored on the result; by default the name of the first part.

        Returns
        -------
        Activations

        Raises
        ------
        ValueError
            If the parts have different numbers of features.
        """
        parts = [p for p in parts if p is not None]
        if not parts:
            return cls(np.zeros((0, 0), np.float32), {}, layer=layer)
        widths = {p.values.shape[1] for p in parts if len(p)}
        if len(widths) > 1:
            raise ValueError(
                f"cannot concatenate activations with different feature counts {sorted(widths)}; "
                "captures of one layer must keep their width"
            )
        width = widths.pop() if widths else parts[0].values.shape[1]
        values = np.concatenate([p.values.reshape(len(p), width) for p in parts], axis=0).astype(
            np.float32, copy=False
        )

        names: list[str] = []
        for part in parts:
            names.extend(n for n in part.metadata if n not in names)
        metadata = {}
        for name in names:
            template = next(p.metadata[name] for p in parts if name in p.metadata)
            metadata[name] = np.concatenate(
                [
                    p.metadata[name] if name in p.metadata else _fill_column(name, template, len(p))
                    for p in parts
                ]
            )
        return cls(values, metadata, layer=layer if layer is not None else parts[0].layer)

    def __repr__(self) -> str:
        columns = ", ".join(self.metadata)
        return (
            f"Activations(layer={self.layer!r}, rows={len(self)}, "
            f"features={self.values.shape[1]}, metadata=[{columns}])"
        )


def _fill_column(name: str, template: np.ndarray, length: int) -> np.ndarray:
    """Build a filler column for rows that lack ``name``, typed like ``template``."""
    if template.dtype.kind in "iu":
        fill = 0 if name == "call" else -1
        return np.full(length, fill, dtype=template.dtype)
    if template.dtype.kind == "b":
        return np.zeros(length, dtype=bool)
    if template.dtype.kind in "US":
        return np.full(length, "", dtype=template.dtype)
    if template.dtype.kind == "f":
        return np.full(length, np.nan, dtype=template.dtype)
    return np.full(length, None, dtype=object)
