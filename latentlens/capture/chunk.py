"""Captured batches whose metadata columns are built when they are read, not in the hook.

A forward hook only pools and copies the batch. The numpy metadata (step, sample, label,
id, split, call, token) is built by :meth:`PendingChunk.materialize` when the rows are
read, spilled or sampled. The byte count is computed up front, equal to the
``Activations.nbytes`` that ``materialize`` will return, so the memory budget holds.
"""

from __future__ import annotations

import numpy as np
import torch

from latentlens.capture.activations import Activations

__all__ = ["BlockColumns", "PendingChunk"]

_INT64_BYTES = 8


class BlockColumns:
    """Per-sample metadata of one ``record()`` block, shared by the chunks captured in it.

    ``labels``, ``ids`` and a per-sample ``split`` are the block's own 1-D copies, so later
    changes to the caller's arrays cannot alter them. Labels and ids given as tensors stay
    CPU tensors until :meth:`numpy_columns` converts them. ``row_bytes`` is the metadata
    size of one row without the optional ``call`` and ``token`` columns, and
    ``n_labels`` the number of labels (None without labels).
    """

    __slots__ = ("step", "sample_base", "labels", "ids", "split", "row_bytes", "n_labels")

    def __init__(
        self,
        step: int,
        sample_base: int,
        labels: np.ndarray | torch.Tensor | None,
        ids: np.ndarray | torch.Tensor | None,
        split: str | np.ndarray | None,
    ) -> None:
        self.step = step
        self.sample_base = sample_base
        self.labels = labels
        self.ids = ids
        self.split = split
        # An int, because len() of a tensor runs Python code in torch on every call.
        self.n_labels = None if labels is None else int(labels.shape[0])
        # "step" and "sample" are int64; a str split becomes a column of np.array(split).dtype,
        # the dtype np.full gives it in materialize(). Tensor.numpy() keeps the element size.
        row_bytes = 2 * _INT64_BYTES
        for column in (labels, ids):
            if isinstance(column, torch.Tensor):
                row_bytes += column.element_size()
            elif column is not None:
                row_bytes += column.itemsize
        if isinstance(split, str):
            row_bytes += np.array(split).itemsize
        elif split is not None:
            row_bytes += split.itemsize
        self.row_bytes = row_bytes

    def numpy_columns(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return labels and ids as numpy arrays, converting tensors once."""
        if isinstance(self.labels, torch.Tensor):
            self.labels = self.labels.numpy()
        if isinstance(self.ids, torch.Tensor):
            self.ids = self.ids.numpy()
        return self.labels, self.ids


class PendingChunk:
    """One pooled batch of one layer, with its metadata still to build.

    Parameters
    ----------
    values : torch.Tensor of shape (n_rows, n_features), float32, on the CPU
        Pooled rows that this chunk owns (a copy, never a view of a module's output).
    block : BlockColumns
        Metadata of the ``record()`` block the batch was captured in.
    offset : int
        Index of the batch's first sample among the block's samples.
    call : int
        Call index of the module in the forward pass; 0 adds no ``"call"`` column.
    sample : torch.Tensor of int64 or None
        Sample (within the batch) of each row, when pooling gives several rows per sample.
    token : torch.Tensor of int64 or None
        Token or spatial position of each row, with ``sample``.
    """

    __slots__ = ("values", "block", "offset", "call", "sample", "token", "nbytes", "layer")

    def __init__(
        self,
        values: torch.Tensor,
        block: BlockColumns,
        offset: int,
        call: int,
        layer: str,
        sample: torch.Tensor | None = None,
        token: torch.Tensor | None = None,
    ) -> None:
        self.values = values
        self.block = block
        self.offset = offset
        self.call = call
        self.layer = layer
        self.sample = sample
        self.token = token
        rows = values.shape[0]
        row_bytes = block.row_bytes
        if call:
            row_bytes += _INT64_BYTES
        if token is not None:
            row_bytes += _INT64_BYTES
        self.nbytes = values.nbytes + rows * row_bytes

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def materialize(self) -> Activations:
        """Build the ``Activations`` of this chunk: values as numpy, and every column."""
        block = self.block
        array = self.values.numpy()
        count = array.shape[0]
        if self.sample is None:
            rows: np.ndarray | slice = slice(self.offset, self.offset + count)
            sample = np.arange(self.offset, self.offset + count, dtype=np.int64)
        else:
            rows = self.sample.numpy().astype(np.int64) + self.offset
            sample = rows
        columns = {
            "step": np.full(count, block.step, dtype=np.int64),
            "sample": sample + block.sample_base,
        }
        labels, ids = block.numpy_columns()
        if labels is not None:
            columns["label"] = labels[rows]
        if ids is not None:
            columns["id"] = ids[rows]
        if isinstance(block.split, str):
            columns["split"] = np.full(count, block.split)
        elif block.split is not None:
            columns["split"] = block.split[rows]
        if self.call:
            columns["call"] = np.full(count, self.call, dtype=np.int64)
        if self.token is not None:
            columns["token"] = self.token.numpy().astype(np.int64)
        return Activations._from_trusted(array, columns, self.layer)


def materialize(chunk: Activations | PendingChunk) -> Activations:
    """Return ``chunk`` as ``Activations``, building the metadata of a pending chunk."""
    if isinstance(chunk, PendingChunk):
        return chunk.materialize()
    return chunk
