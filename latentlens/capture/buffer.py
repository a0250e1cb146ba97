"""Bounded in-memory storage of captured rows, with per-step reservoirs and disk spill."""

from __future__ import annotations

import logging
import shutil
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentlens.capture.activations import Activations
from latentlens.capture.chunk import PendingChunk, materialize
from latentlens.capture.storage import (
    MANIFEST,
    load_activations,
    save_activations,
    write_shard_manifest,
)

__all__ = ["CaptureBudgetWarning", "CaptureStore"]

logger = logging.getLogger(__name__)


class CaptureBudgetWarning(UserWarning):
    """Emitted when the memory budget makes a recorder drop captured rows."""


class _StepBuffer:
    """Rows of one layer at one step: a list of chunks, or one reservoir chunk.

    Chunks added by the recorder's hooks stay ``PendingChunk`` until :meth:`rows` reads them.
    A plain slotted class, because one is made per layer and step inside the forward hook.
    """

    __slots__ = ("layer", "step", "chunks", "seen", "rng", "nbytes")

    def __init__(self, layer: str, step: int) -> None:
        self.layer = layer
        self.step = step
        self.chunks: list[Activations | PendingChunk] = []
        self.seen = 0
        self.rng: np.random.Generator | None = None
        self.nbytes = 0

    def rows(self) -> Activations | None:
        if not self.chunks:
            return None
        if len(self.chunks) > 1:
            parts = [materialize(chunk) for chunk in self.chunks]
            self.chunks = [Activations.concat(parts, layer=self.layer)]
        elif isinstance(self.chunks[0], PendingChunk):
            self.chunks = [self.chunks[0].materialize()]
        return self.chunks[0]


@dataclass
class _Shard:
    path: str
    layers: dict[str, list[int]]
    widths: dict[str, int]


class CaptureStore:
    """Rows captured by one recorder, bounded by a byte budget.

    Parameters
    ----------
    max_rows_per_step : int or None
        Reservoir size per layer and step; None keeps every row.
    memory_budget : int or None
        Maximum bytes of values and metadata held in memory, over all layers.
    spill_dir : pathlib.Path or None
        Folder for disk shards when the budget is reached; without it the oldest
        steps are dropped.
    seed : int
        Seed of the reservoirs. Step ``s`` of every layer draws from the same stream,
        so layers that see the same rows keep the same samples.
    """

    def __init__(
        self,
        *,
        max_rows_per_step: int | None,
        memory_budget: int | None,
        spill_dir: Path | None,
        seed: int,
    ) -> None:
        if spill_dir is not None:
            _check_spill_dir(spill_dir)
        self.max_rows_per_step = max_rows_per_step
        self.memory_budget = memory_budget
        self.spill_dir = spill_dir
        self.seed = seed
        self.buffers: dict[tuple[str, int], _StepBuffer] = {}
        self.shards: list[_Shard] = []
        self.nbytes = 0
        self.peak_nbytes = 0
        self.dropped_rows = 0
        self._warned_drop = False
        self._shards_written = 0
        self._lock = threading.Lock()

    # -- adding rows -------------------------------------------------------------------

    def add(self, layer: str, step: int, chunk: Activations | PendingChunk) -> None:
        """Add one pooled batch, keeping the reservoir and the budget.

        Without a reservoir a ``PendingChunk`` is stored as it is and its metadata is built
        when it is read; ``chunk.nbytes`` already counts that metadata.
        """
        with self._lock:
            key = (layer, step)
            buffer = self.buffers.get(key)
            if buffer is None:
                buffer = _StepBuffer(layer, step)
                if self.max_rows_per_step is not None:
                    buffer.rng = np.random.default_rng([self.seed, abs(step), int(step < 0)])
                self.buffers[key] = buffer

            if self.max_rows_per_step is None:
                chunk_bytes = chunk.nbytes
                budget = self.memory_budget
                if budget is not None and self.nbytes + chunk_bytes > budget:
                    self._make_room(chunk_bytes, keep=key, include_keep=True)
                    if self.nbytes + chunk_bytes > budget:
                        # With spill_dir the chunk alone exceeds the budget; without it the
                        # open step fills the budget and its later rows are dropped.
                        self._overflow(layer, step, chunk)
                        return
                # Inline integer accounting: this runs in the forward hook of every step.
                buffer.chunks.append(chunk)
                buffer.nbytes += chunk_bytes
                self.nbytes += chunk_bytes
                if self.nbytes > self.peak_nbytes:
                    self.peak_nbytes = self.nbytes
                return

            updated = self._reservoir_update(buffer, materialize(chunk))
            if updated is None:
                return
            new_bytes = updated.nbytes
            self._make_room(new_bytes - buffer.nbytes, keep=key, include_keep=False)
            if (
                self.memory_budget is not None
                and self.nbytes - buffer.nbytes + new_bytes > self.memory_budget
            ):
                # This step's reservoir alone exceeds the budget: it goes to disk (or is
                # dropped) and the step starts a new reservoir, so the step can end up with
                # more than max_rows_per_step rows in total.
                self._account(buffer, 0)
                buffer.chunks = []
                buffer.seen = 0
                self._overflow(layer, step, updated)
                return
            buffer.chunks = [updated]
            self._account(buffer, new_bytes)

    def _account(self, buffer: _StepBuffer, new_bytes: int) -> None:
        self.nbytes += new_bytes - buffer.nbytes
        buffer.nbytes = new_bytes
        self.peak_nbytes = max(self.peak_nbytes, self.nbytes)

    def _reservoir_update(self, buffer: _StepBuffer, chunk: Activations) -> Activations | None:
        """Run reservoir sampling (algorithm R) over the rows of ``chunk``."""
        capacity = self.max_rows_per_step
        current = buffer.rows()
        filled = 0 if current is None else len(current)
        positions = buffer.seen + np.arange(len(chunk))
        buffer.seen += len(chunk)

        slots = list(range(filled))
        appended = positions < capacity
        for offset in np.flatnonzero(appended):
            slots.append(filled + int(offset))
        late = np.flatnonzero(~appended)
        accepted = False
        if len(late):
            draws = buffer.rng.integers(0, positions[late] + 1)
            for offset, draw in zip(late, draws, strict=True):
                if draw < capacity:
                    slots[int(draw)] = filled + int(offset)
                    accepted = True
        if not appended.any() and not accepted:
            return None
        combined = (
            chunk if current is None else Activations.concat([current, chunk], layer=buffer.layer)
        )
        return combined.select(np.asarray(slots, dtype=np.int64))

    def _make_room(self, needed: int, *, keep: tuple[str, int], include_keep: bool) -> None:
        """Spill or drop buffers until ``needed`` more bytes fit in the budget.

        Other steps go first, oldest first. The buffer ``keep`` is spilled too, last, when
        ``include_keep`` is set and spilling is on; it is never dropped.
        """
        if self.memory_budget is None or self.nbytes + needed <= self.memory_budget:
            return
        if self.spill_dir is not None:
            others = [k for k in self.buffers if k != keep and self.buffers[k].chunks]
            self._spill(others)
            over = self.nbytes + needed > self.memory_budget
            if include_keep and over and self.buffers[keep].chunks:
                self._spill([keep])
            return
        for key in list(self.buffers):
            if self.nbytes + needed <= self.memory_budget:
                break
            if key == keep or not self.buffers[key].chunks:
                continue
            buffer = self.buffers.pop(key)
            self._drop(buffer.layer, buffer.step, sum(len(c) for c in buffer.chunks))
            self.nbytes -= buffer.nbytes

    def _overflow(self, layer: str, step: int, chunk: Activations | PendingChunk) -> None:
        """Handle a chunk that does not fit even in an empty budget."""
        if self.spill_dir is not None:
            self._write_shard({layer: materialize(chunk)})
        else:
            self._drop(layer, step, len(chunk))

    def _drop(self, layer: str, step: int, rows: int) -> None:
        self.dropped_rows += rows
        if not self._warned_drop:
            self._warned_drop = True
            warnings.warn(
                f"the capture memory budget of {self.memory_budget} bytes is full, so rows are "
                f"dropped (first: {rows} rows of layer {layer!r}, step {step}). This warning "
                "is shown once per recorder; its dropped_rows attribute counts every row "
                "dropped. Raise memory_budget, set max_rows_per_step or every_n_steps, or give "
                "spill_dir",
                CaptureBudgetWarning,
                stacklevel=5,
            )

    # -- spilling ----------------------------------------------------------------------

    def _spill(self, keys: Iterable[tuple[str, int]]) -> None:
        by_layer: dict[str, list[Activations]] = {}
        for key in keys:
            buffer = self.buffers[key]
            rows = buffer.rows()
            if rows is None:
                continue
            by_layer.setdefault(buffer.layer, []).append(rows)
            self.nbytes -= buffer.nbytes
            buffer.nbytes = 0
            buffer.chunks = []
        if by_layer:
            self._write_shard(
                {name: Activations.concat(parts, layer=name) for name, parts in by_layer.items()}
            )

    def _write_shard(self, layers: dict[str, Activations]) -> None:
        assert self.spill_dir is not None
        # Names that exist belong to another recorder writing to the same folder: skip them.
        while True:
            name = f"shard-{self._shards_written:06d}"
            self._shards_written += 1
            if not (self.spill_dir / name).exists():
                break
        save_activations(self.spill_dir / name, layers)
        steps = {
            layer: sorted({int(s) for s in np.unique(acts.metadata["step"])})
            for layer, acts in layers.items()
        }
        widths = {layer: int(acts.values.shape[1]) for layer, acts in layers.items()}
        self.shards.append(_Shard(name, steps, widths))
        # NOTE: with two recorders on one folder, the manifest lists only the last writer's
        # shards. Each recorder still reads its own, so nothing is lost, but the folder is not
        # one capture.
        write_shard_manifest(self.spill_dir, [{"path": shard.path} for shard in self.shards])
        logger.debug("spilled %s rows to %s", {k: len(v) for k, v in layers.items()}, name)

    # -- reading -----------------------------------------------------------------------

    def rows(self, layer: str, steps: set[int] | None) -> Activations | None:
        """Return the rows of ``layer`` (disk shards first, then memory), optionally by step."""
        with self._lock:
            parts: list[Activations] = []
            for shard in self.shards:
                shard_steps = shard.layers.get(layer)
                if not shard_steps or (steps is not None and not steps.intersection(shard_steps)):
                    continue
                acts = load_activations(self.spill_dir / shard.path, layers=[layer])[layer]
                parts.append(_filter_steps(acts, steps))
            for (name, step), buffer in self.buffers.items():
                if name != layer or (steps is not None and step not in steps):
                    continue
                rows = buffer.rows()
                if rows is not None:
                    parts.append(_sorted_by_sample(rows) if buffer.rng is not None else rows)
            if not parts:
                return None
            return Activations.concat(parts, layer=layer)

    def width(self, layer: str) -> int:
        """Return the feature count of ``layer``'s rows in memory or on disk (0 if none)."""
        with self._lock:
            for (name, _), buffer in self.buffers.items():
                if name == layer and buffer.chunks:
                    return int(buffer.chunks[0].values.shape[1])
            for shard in self.shards:
                if shard.layers.get(layer):
                    return shard.widths[layer]
            return 0

    def steps(self, layer: str) -> list[int]:
        """Sorted steps with rows of ``layer`` in memory or on disk."""
        with self._lock:
            found = {step for (name, step), b in self.buffers.items() if name == layer and b.chunks}
            for shard in self.shards:
                found.update(shard.layers.get(layer, []))
            return sorted(found)

    def clear(self, step: int | None) -> None:
        """Forget rows of one step, or all rows and shards when ``step`` is None."""
        with self._lock:
            if step is None:
                self.buffers.clear()
                self.nbytes = 0
                if self.spill_dir is not None:
                    for shard in self.shards:
                        shutil.rmtree(self.spill_dir / shard.path, ignore_errors=True)
                    if self.shards:
                        (self.spill_dir / "manifest.json").unlink(missing_ok=True)
                self.shards = []
                return
            for key in [k for k in self.buffers if k[1] == step]:
                self.nbytes -= self.buffers.pop(key).nbytes
            for shard in self.shards:
                if not any(step in s for s in shard.layers.values()):
                    continue
                folder = self.spill_dir / shard.path
                kept = {}
                for name, acts in load_activations(folder).items():
                    acts = acts.select(acts.metadata["step"] != step)
                    if len(acts):
                        kept[name] = acts
                if kept:
                    save_activations(folder, kept)
                else:
                    shutil.rmtree(folder, ignore_errors=True)
                shard.layers = {
                    name: [s for s in steps if s != step]
                    for name, steps in shard.layers.items()
                    if name in kept
                }
            self.shards = [s for s in self.shards if s.layers]
            if self.spill_dir is not None and self.shards:
                write_shard_manifest(self.spill_dir, [{"path": s.path} for s in self.shards])
            elif self.spill_dir is not None:
                (self.spill_dir / "manifest.json").unlink(missing_ok=True)


def _check_spill_dir(folder: Path) -> None:
    """Reject a spill folder that is a file or already contains a capture."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"spill_dir={str(folder)!r} is a file; give a folder path")
    if folder.is_dir() and ((folder / MANIFEST).exists() or any(folder.glob("shard-*"))):
        raise ValueError(
            f"spill_dir={str(folder)!r} already contains a capture ({MANIFEST} or shard-* "
            "folders), which this recorder would overwrite; give an empty or new folder, or "
            "read the old rows with latentlens.capture.load_activations and remove the folder"
        )


def _filter_steps(acts: Activations, steps: set[int] | None) -> Activations:
    if steps is None:
        return acts
    return acts.select(np.isin(acts.metadata["step"], sorted(steps)))


def _sorted_by_sample(acts: Activations) -> Activations:
    """Put reservoir rows back in arrival order."""
    order = np.lexsort((acts.metadata.get("token", np.zeros(len(acts))), acts.metadata["sample"]))
    if "call" in acts.metadata:
        order = np.lexsort(
            (
                acts.metadata.get("token", np.zeros(len(acts))),
                acts.metadata["call"],
                acts.metadata["sample"],
            )
        )
    return acts.select(order)
