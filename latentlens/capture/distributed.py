"""torch.distributed support: one shard per rank on disk, or a gather to one rank."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlens.capture.activations import Activations
from latentlens.capture.storage import save_activations, write_shard_manifest

__all__ = ["gather_activations", "save_per_rank"]


def _world() -> tuple[int, int]:
    """Return (rank, world size), or (0, 1) outside an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_per_rank(
    folder: str | os.PathLike[str],
    activations: Mapping[str, Activations],
    *,
    extra: Mapping[str, Any] | None = None,
    file_format: str = "safetensors",
) -> Path:
    """Save this process's activations; under torch.distributed, one shard per rank.

    With one process this is :func:`save_activations`. With several ranks each rank writes
    ``folder/rank-<rank:05d>``. After a barrier, rank 0 writes ``folder/manifest.json``
    listing every rank's shard, and :func:`load_activations` reads the folder as one
    capture with a ``"rank"`` column. All ranks must call this function, and ``folder``
    must be on a file system that all ranks share.

    Returns
    -------
    pathlib.Path
        ``folder``.

    Raises
    ------
    ValueError
        If this rank has no activations (an empty rank writes nothing and rank 0 leaves
        it out, so only a single process with nothing captured raises).
    """
    import torch.distributed as dist

    rank, world_size = _world()
    folder = Path(folder)
    if world_size == 1:
        if not activations:
            raise ValueError("nothing was captured; run forward passes inside recorder.record()")
        return save_activations(folder, activations, extra=extra, file_format=file_format)

    shard = f"rank-{rank:05d}"
    if activations:
        save_activations(folder / shard, activations, extra=extra, file_format=file_format)
    present = [None] * world_size
    dist.all_gather_object(present, bool(activations))
    dist.barrier()
    if rank == 0:
        shards = [{"path": f"rank-{r:05d}", "rank": r} for r in range(world_size) if present[r]]
        write_shard_manifest(folder, shards, extra=extra)
    dist.barrier()
    return folder


def gather_activations(
    activations: Mapping[str, Activations], *, destination: int = 0
) -> dict[str, Activations] | None:
    """Collect every rank's activations on one rank, in memory, through ``gather_object``.

    Parameters
    ----------
    activations : mapping of str to Activations
        This rank's rows, for example ``recorder.all_activations()``.
    destination : int, default=0
        Rank that receives the result.

    Returns
    -------
    dict of str to Activations or None
        On ``destination``: per layer, all ranks' rows in rank order with a ``"rank"``
        column. None on the other ranks. Outside a process group, the input with a
        ``"rank"`` column of zeros.
    """
    import torch.distributed as dist

    rank, world_size = _world()
    payload = {name: (acts.values, dict(acts.metadata)) for name, acts in activations.items()}
    if world_size == 1:
        gathered = [payload]
    else:
        gathered = [None] * world_size if rank == destination else None
        dist.gather_object(payload, gathered, dst=destination)
        if rank != destination:
            return None

    parts: dict[str, list[Activations]] = {}
    for source_rank, received in enumerate(gathered):
        for name, (values, metadata) in received.items():
            metadata = dict(metadata)
            metadata["rank"] = np.full(len(values), source_rank, dtype=np.int64)
            parts.setdefault(name, []).append(Activations(values, metadata, layer=name))
    return {name: Activations.concat(chunks, layer=name) for name, chunks in parts.items()}
