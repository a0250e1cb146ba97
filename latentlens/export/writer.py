"""ProjectorWriter: a TensorBoard run with projector embeddings, scalars and map pictures.

See the package docstring for the on-disk layout. Every public method checks all of
its inputs before it touches the disk. Every file is written under a temporary name
and renamed, and the run's projector config is merged (not replaced) after each
embedding. So the run opens in TensorBoard after every call, also after a crash in
the middle of an export.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from latentlens.export import config as config_files
from latentlens.export._files import atomic_write_bytes, atomic_write_text
from latentlens.export.bookmarks import bookmarks_json, check_layout
from latentlens.export.images import encode_png, render_scatter
from latentlens.export.metadata import (
    check_metadata,
    clean_column,
    color_columns,
    metadata_tsv,
)
from latentlens.export.names import check_run_name, check_step, tensor_name
from latentlens.export.sprite import check_images, sprite_png

logger = logging.getLogger(__name__)

MAX_POINTS = 100_000  # the projector's browser front end loads at most this many rows


class ExportWarning(UserWarning):
    """latentlens changed what was asked in order to keep the export loadable (e.g. subsampled)."""


def _as_values(values: object) -> np.ndarray:
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor, torch not imported
        values = values.detach().cpu().float().numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"values must be a numeric array of shape (n, d), got dtype {array.dtype}; pass "
            f"the activations as float32"
        )
    if array.ndim != 2:
        raise ValueError(
            f"values must be 2-D with shape (n_points, n_features), got shape {array.shape}; "
            f"flatten or pool each point to one vector first"
        )
    n_points, n_features = array.shape
    if n_points < 2 or n_features < 2:
        raise ValueError(
            f"values must have at least 2 rows and 2 columns for the projector to list it, "
            f"got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(
            f"values contains NaN or infinite entries in {bad_rows.size} rows (first: "
            f"{bad_rows[:5].tolist()}); drop or fix those rows before exporting"
        )
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        largest = np.abs(array).max()
        if largest > np.finfo(np.float32).max:
            raise ValueError(
                f"values contains magnitudes up to {largest:.3g}, beyond float32 (the "
                f"projector's type, max {np.finfo(np.float32).max:.3g}); rescale the values"
            )
    return array


def _check_positive_int(value: object, parameter: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{parameter} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{parameter} must be >= {minimum}, got {value}")
    return int(value)


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str):
        raise TypeError(f"tag must be a str such as 'drift/fc1/p_value', got {tag!r}")
    if not tag.strip() or any(c in tag for c in "\t\n\r\x00"):
        raise ValueError(
            f"tag must be a non-empty name without tabs, line breaks or NUL, got {tag!r}; "
            f"use e.g. 'drift/fc1/p_value'"
        )
    return tag


def tensor_bytes(values: np.ndarray) -> tuple[bytes, str]:
    """Encode the embedding tensor as TensorBoard will read it: ``(content, "bin" or "tsv")``.

    TensorBoard first reads a tensor file as UTF-8 text and switches to raw float32 only
    when decoding fails. Its reader parses each line as soon as it is complete, so the
    binary form is safe only when an invalid UTF-8 sequence occurs before the first
    ``\\n`` byte (or anywhere, when there is none). Otherwise the tensor is written as
    TSV text, which reads back to the same float32 values.
    """
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    newline = raw.find(b"\n")
    prefix = raw if newline < 0 else raw[: newline + 1]
    try:
        prefix.decode("utf-8")
    except UnicodeDecodeError:
        return raw, "bin"
    rows = np.char.mod("%.9g", values.astype(np.float32))
    return ("\n".join("\t".join(row) for row in rows) + "\n").encode("ascii"), "tsv"


class ProjectorWriter:
    """Write one TensorBoard run: projector embeddings per (layer, step), scalars, images.

    The run folder ``logdir/run`` gets an event file at once (so TensorBoard lists the
    run) and, per embedding, a folder under ``projector/`` referenced from the run's
    ``projector_config.pbtxt``. The config is merged, not overwritten: embeddings from
    an earlier session, another writer or torch's ``SummaryWriter.add_embedding`` on the
    same run are kept, and each tensor name appears exactly once.

    Parameters
    ----------
    logdir : str or os.PathLike
        TensorBoard log directory (what ``tensorboard --logdir`` is given).
    run : str or None, default=None
        Run folder inside ``logdir``: ``/``-separated parts of ``[A-Za-z0-9_.-]``.
        ``None`` writes into ``logdir`` itself (TensorBoard calls that run ``"."``).
    max_points : int, default=100000
        Embeddings with more rows are subsampled to this many, deterministically; the
        projector's browser front end loads at most 100,000 rows.
    subsample_seed : int, default=0
        Seed of the subsample; the same seed and row count always keep the same rows.
    flush_secs : float, default=10
        How often scalars and images are flushed to the event file in the background.

    Raises
    ------
    TypeError, ValueError
        On a run name TensorBoard cannot put in a URL, a ``logdir`` that is a file, or
        bad settings.

    Notes
    -----
    TensorBoard's projector lists bookmarks from the server but does not apply one on
    load: open the Projector tab, pick the tensor, and click the bookmark (bottom right)
    to see the exported layout. torch's ``add_embedding`` rewrites the config with only
    its own entries. The next embedding or ``close`` of any ProjectorWriter on the run
    puts every latentlens embedding back: ``ProjectorWriter(logdir, run).close()``
    repairs a run that torch wrote last. A running TensorBoard caches each tensor by run
    and name, so an embedding exported again under the same name shows its new values
    after a restart.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> rng = np.random.default_rng(0)
    >>> with ProjectorWriter(tempfile.mkdtemp(), run="demo") as writer:
    ...     name = writer.add_embedding(rng.normal(size=(50, 8)), layer="fc1", step=3,
    ...                                 metadata={"label": rng.integers(0, 3, 50)},
    ...                                 layout=rng.normal(size=(50, 2)))
    ...     writer.add_scalar("drift/fc1/p_value", 0.3, step=3)
    >>> name
    'fc1_step000003'
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        run: str | None = None,
        *,
        max_points: int = MAX_POINTS,
        subsample_seed: int = 0,
        flush_secs: float = 10.0,
    ) -> None:
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"logdir must be a path, got {type(logdir).__name__}: {logdir!r}")
        if run is not None:
            check_run_name(run)
        self.max_points = _check_positive_int(max_points, "max_points", minimum=2)
        if self.max_points > MAX_POINTS:
            raise ValueError(
                f"max_points must be <= {MAX_POINTS}, got {max_points}: the projector's "
                f"browser front end loads at most {MAX_POINTS} rows and rejects a bookmark "
                f"with more points than it loaded"
            )
        if isinstance(subsample_seed, bool) or not isinstance(subsample_seed, numbers.Integral):
            raise TypeError(f"subsample_seed must be an int, got {subsample_seed!r}")
        if (
            isinstance(flush_secs, bool)
            or not isinstance(flush_secs, numbers.Real)
            or not flush_secs > 0
        ):
            raise ValueError(f"flush_secs must be a positive number of seconds, got {flush_secs!r}")
        self.subsample_seed = int(subsample_seed)
        self.logdir = Path(logdir)
        self.run = run if run is not None else "."
        self.run_dir = self.logdir if run is None else self.logdir.joinpath(*run.split("/"))
        for folder in (self.logdir, self.run_dir):
            if folder.exists() and not folder.is_dir():
                raise ValueError(
                    f"{folder} exists and is not a folder; choose another logdir or run"
                )

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._events = EventFileWriter(
            str(self.run_dir), flush_secs=float(flush_secs), filename_suffix=".latentlens"
        )
        self._closed = False
        self.tensor_names: list[str] = []
        self._sources: dict[str, tuple[str, int]] = {}

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> ProjectorWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this ProjectorWriter is closed; open a new one on the same run")

    def flush(self) -> None:
        """Write pending scalars and images to the event file now."""
        self._check_open()
        self._events.flush()

    def close(self) -> None:
        """Flush events, merge the projector config once more and close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._events.close()
        finally:
            # Also when this writer exported nothing: opening and closing a writer on a
            # run restores latentlens entries that another tool dropped from the config.
            if (self.run_dir / config_files.EMBEDDINGS_DIR).is_dir():
                config_files.merge_config(self.run_dir)

    # -- projector ------------------------------------------------------------------------

    def add_embedding(
        self,
        values: object,
        *,
        layer: str,
        step: int,
        metadata: Mapping[str, object] | None = None,
        images: object = None,
        layout: object = None,
        layout_name: str = "umap",
        layout_neighbors: int = 15,
        layout_min_dist: float = 0.1,
    ) -> str:
        """Add (or replace) the embedding of one layer at one step.

        Parameters
        ----------
        values : array-like of float, shape (n, d)
            The latent vectors, ``n >= 2``, ``d >= 2``, all finite. Stored as float32.
        layer : str
            Layer name; with ``step`` it gives the tensor name (see `tensor_name`).
        step : int
            Training step or epoch, ``>= 0``.
        metadata : mapping of str to sequence of length n, optional
            Per-point columns (labels, predictions, scores, ids). Values may be str, int,
            float, bool or None; NaN/inf and None are written as missing, tabs and line
            breaks become spaces. An ``index`` column (original row number) is added.
        images : array-like, shape (n, h, w) or (n, h, w, 3), optional
            One picture per point, uint8 or float in [0, 1], written as a sprite sheet of
            at most 8192 px (thumbnails shrink when needed).
        layout : array-like of float, shape (n, 2) or (n, 3), optional
            Precomputed coordinates (e.g. our UMAP), written as projector bookmarks, one
            per metadata column worth colouring by.
        layout_name : str, default="umap"
            Shown in the bookmark labels.
        layout_neighbors, layout_min_dist : int, float
            The layout's settings, shown in the projector's UMAP panel.

        Returns
        -------
        str
            The tensor name, as TensorBoard lists it.

        Raises
        ------
        TypeError, ValueError
            Before anything is written: on a wrong shape, a length mismatch between
            ``values``, ``metadata``, ``images`` and ``layout``, NaN or inf in ``values``
            or ``layout``, bad names, or a closed writer.

        Warns
        -----
        ExportWarning
            When more than ``max_points`` rows are subsampled.
        """
        self._check_open()
        array = _as_values(values)
        name = tensor_name(layer, step)
        n_points, n_features = array.shape
        columns = check_metadata(metadata, n_points)
        pictures = None if images is None else check_images(images, n_points)
        coords = None if layout is None else check_layout(layout, n_points)
        if not isinstance(layout_name, str) or not layout_name.strip():
            raise ValueError(
                f"layout_name must be a non-empty str such as 'umap', got {layout_name!r}"
            )
        layout_name = " ".join(layout_name.split())
        neighbors = _check_positive_int(layout_neighbors, "layout_neighbors")
        if not isinstance(layout_min_dist, numbers.Real) or not math.isfinite(layout_min_dist):
            raise ValueError(f"layout_min_dist must be a finite number, got {layout_min_dist!r}")

        source = self._sources.setdefault(name, (layer, step))
        if source != (layer, step):
            warnings.warn(
                f"layer {layer!r} at step {step} and layer {source[0]!r} at step {source[1]} "
                f"both map to tensor name {name!r}; the later export replaces the earlier "
                f"one. Rename one of the layers to keep both",
                ExportWarning,
                stacklevel=2,
            )
            self._sources[name] = (layer, step)

        rows = None
        index = np.arange(n_points)
        if n_points > self.max_points:
            rng = np.random.default_rng(self.subsample_seed)
            rows = np.sort(rng.choice(n_points, size=self.max_points, replace=False))
            index = rows
            warnings.warn(
                f"{name}: {n_points} points is more than max_points={self.max_points}; "
                f"exporting a deterministic subsample of {self.max_points} (seed "
                f"{self.subsample_seed}); the 'index' column keeps each point's original row",
                ExportWarning,
                stacklevel=2,
            )
            array = array[rows]
            pictures = None if pictures is None else pictures[rows]
            coords = None if coords is None else coords[rows]

        cells = {column: clean_column(values_, rows) for column, values_ in columns.items()}
        self._write_embedding(
            name,
            array,
            cells,
            index,
            pictures,
            coords,
            layout_name,
            neighbors,
            float(layout_min_dist),
        )
        if name not in self.tensor_names:
            self.tensor_names.append(name)
        self._events.flush()
        return name

    def _write_embedding(
        self, name, array, cells, index, pictures, coords, layout_name, neighbors, min_dist
    ) -> None:
        version = config_files.new_version()
        folder = self.run_dir / config_files.EMBEDDINGS_DIR / name / version
        folder.mkdir(parents=True, exist_ok=False)
        relative = f"{config_files.EMBEDDINGS_DIR}/{name}/{version}"
        info = EmbeddingInfo(tensor_name=name)
        info.tensor_shape.extend(array.shape)

        content, kind = tensor_bytes(array)
        atomic_write_bytes(folder / f"tensor.{kind}", content)
        info.tensor_path = f"{relative}/tensor.{kind}"
        del content

        atomic_write_text(folder / "metadata.tsv", metadata_tsv(cells, index))
        info.metadata_path = f"{relative}/metadata.tsv"

        if pictures is not None:
            png, (thumb_width, thumb_height) = sprite_png(pictures)
            atomic_write_bytes(folder / "sprite.png", png)
            info.sprite.image_path = f"{relative}/sprite.png"
            info.sprite.single_image_dim.extend([thumb_width, thumb_height])

        if coords is not None:
            # Without a header the projector names the single column "label".
            label = "label"
            if cells and "label" not in cells:
                label = next(iter(cells))
            text = bookmarks_json(
                coords,
                n_features=array.shape[1],
                color_columns=color_columns(cells),
                label_column=label,
                search_column=label,
                layout_name=layout_name,
                neighbors=neighbors,
                min_dist=min_dist,
            )
            atomic_write_text(folder / "bookmarks.json", text)
            info.bookmarks_path = f"{relative}/bookmarks.json"

        # The fragment is written last: a folder without it is an unfinished export.
        atomic_write_text(folder / config_files.FRAGMENT_NAME, text_format.MessageToString(info))
        config_files.merge_config(self.run_dir)
        logger.info("wrote embedding %s (%d x %d) to %s", name, *array.shape, folder)

    # -- scalars and images ---------------------------------------------------------------

    def _add_summary(
        self, value: summary_pb2.Summary.Value, step: int, wall_time: float | None
    ) -> None:
        event = event_pb2.Event(
            wall_time=time.time() if wall_time is None else float(wall_time),
            step=step,
            summary=summary_pb2.Summary(value=[value]),
        )
        self._events.add_event(event)

    def add_scalar(
        self, tag: str, value: float, *, step: int, wall_time: float | None = None
    ) -> None:
        """Log one scalar (e.g. a drift p-value or the share of outliers) at ``step``.

        Parameters
        ----------
        tag : str
            Chart name; ``/`` groups charts, e.g. ``"drift/fc1/p_value"``.
        value : float
            A real number (NaN is allowed and shown as a gap).
        step : int
            ``>= 0``.
        wall_time : float, optional
            Seconds since the epoch; defaults to now.

        Raises
        ------
        TypeError, ValueError
            On a bad tag, a non-numeric value or a bad step.
        """
        self._check_open()
        tag = _check_tag(tag)
        step = check_step(step)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            if hasattr(value, "item") and getattr(value, "size", 1) == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"value must be a real number, got {value!r} for tag {tag!r}")
        self._add_summary(
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value)), step, wall_time
        )

    def add_image(
        self, tag: str, image: object, *, step: int, wall_time: float | None = None
    ) -> None:
        """Log one picture for TensorBoard's Images dashboard.

        Parameters
        ----------
        tag : str
            Image name, e.g. ``"maps/fc1/label"``.
        image : array-like, shape (h, w), (h, w, 3) or (h, w, 4)
            uint8, or float in [0, 1]; channels last.
        step : int
            ``>= 0``.

        Raises
        ------
        TypeError, ValueError
            On a bad tag, step, shape or value range.
        """
        self._check_open()
        tag = _check_tag(tag)
        step = check_step(step)
        png, height, width, channels = encode_png(image)
        picture = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        self._add_summary(summary_pb2.Summary.Value(tag=tag, image=picture), step, wall_time)

    def add_map_image(
        self,
        tag: str,
        layout: object,
        color_values: object = None,
        *,
        step: int,
        categorical: bool,
        size: int = 512,
        title: str | None = None,
    ) -> np.ndarray:
        """Draw a layout as a scatter picture (see `render_scatter`) and log it as an image.

        Parameters
        ----------
        tag : str
            Image name, e.g. ``"maps/fc1"``.
        layout : array-like, shape (n, 2) or (n, 3)
        color_values : sequence of length n, optional
            Labels (``categorical=True``) or scores (``categorical=False``).
        step : int
        categorical : bool
        size : int, default=512
        title : str, optional
            Defaults to ``"<tag> step <step>"``.

        Returns
        -------
        ndarray of uint8, shape (H, W, 3)
            The picture that was logged.
        """
        self._check_open()
        tag = _check_tag(tag)
        step = check_step(step)
        picture = render_scatter(
            layout,
            color_values,
            categorical=categorical,
            size=size,
            title=f"{tag} step {step}" if title is None else title,
        )
        self.add_image(tag, picture, step=step)
        return picture
