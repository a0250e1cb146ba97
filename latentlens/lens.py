"""LatentLens: capture, project, score and export, one step at a time.

This is the only module that depends on every part of the pipeline. Capture hands over float32
arrays and metadata columns, and the projection, the scores and the exporter see nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from latentlens.alignment import apply_alignment, fit_alignment, match_rows
from latentlens.capture import ActivationRecorder
from latentlens.export import ProjectorWriter
from latentlens.scores import OutlierScorer, drift_test, per_class_drift

logger = logging.getLogger(__name__)

_PROJECTIONS = ("umap", "parametric")

# A map warm-started from the previous step's map runs a short, gentle layout from that map's own
# scale, so points move only as far as their activations ask. On the demo's penultimate layer
# (benchmarks/map_stability.py) this halves the displacement between consecutive epochs compared
# with a fresh fit, at equal trustworthiness. umap_options overrides both.
WARM_START_LEARNING_RATE = 0.25
WARM_START_EPOCHS = 100


@dataclass
class LayerReport:
    """What :meth:`LatentLens.publish` computed for one layer at one step.

    ``layout`` is (n, n_components), or None when there were too few rows to project.
    ``drift`` is a :class:`~latentlens.scores.DriftResult`, or None at the reference step.
    ``outlier_scores`` and ``outlier_p_values`` are (n,), or None before a reference exists.
    """

    layer: str
    step: int
    n_rows: int
    layout: np.ndarray | None = None
    drift: Any = None
    class_drift: Any = None
    outlier_scores: np.ndarray | None = None
    outlier_p_values: np.ndarray | None = None
    tensor_name: str | None = None


@dataclass
class _Reference:
    values: np.ndarray
    labels: np.ndarray | None
    step: int | None
    scorer: Any = None
    parametric: Any = None


@dataclass
class _PendingStep:
    rows: int = 0
    images: list[np.ndarray] = field(default_factory=list)
    # Ids the user gave, in recording order; lens-generated ids are the positions themselves.
    user_ids: list[Any] = field(default_factory=list)
    generated_ids: bool = False


class LatentLens:
    """Record chosen layers during training, then map, score and export them per step.

    Parameters
    ----------
    model : torch.nn.Module
        The model to watch. Hooks are added when the lens is entered (or :meth:`attach` is
        called) and removed on :meth:`close`, also after an exception.
    layers : str, re.Pattern, nn.Module, type, callable or a sequence of them
        Layers to record, as accepted by :class:`~latentlens.capture.ActivationRecorder`:
        dotted names, globs (``"encoder.layer.*.output"``), regexes, module objects, module types
        or a callable.
    logdir : str or Path
        TensorBoard log directory. Each lens writes one run folder inside it.
    run : str, default="latentlens"
        Name of the run folder.
    pooling : str, default="auto"
        How a layer's output becomes one row per sample (see ``ActivationRecorder``).
    projection : {"umap", "parametric"}, default="umap"
        ``"umap"`` fits a new map at every published step, warm-started from the previous map and
        aligned onto it with Procrustes on the points they share, so maps stay comparable.
        ``"parametric"`` fits a :class:`~latentlens.ParametricUMAP` encoder at the reference step
        and maps every later step with it, so all steps share one coordinate system.
    n_components : {2, 3}, default=2
    n_neighbors : int, default=15
    min_dist : float, default=0.1
    random_state : int, default=0
        Seed of the projection and the scores; the same seed gives the same output.
    reference_step : "first" or int, default="first"
        Step whose activations are the reference for drift and outlier scores. Ignored for a layer
        once :meth:`set_reference` has given it a reference data set.
    publish_every : int, optional
        When set, a step ``s`` with ``s % publish_every == 0`` is published as soon as recording
        moves on to another step, and the last recorded step is published on :meth:`close`.
    drift, outliers : bool, default=True
        Compute drift scalars and per-point outlier columns against the reference.
    alpha : float, default=0.05
        Significance level of the drift flag and of the ``outlier`` column.
    min_class_size : int, default=50
        Rows a class needs in both the reference and the current step to get its own drift
        test under ``drift_by_class``. Smaller classes enter only the class-mix test.
    step_column : str, default="step"
        Name of the metadata column that contains the step (the demo uses ``"epoch"``).
    umap_options : dict, optional
        Extra keyword arguments for :class:`~latentlens.UMAP` or ``ParametricUMAP``.
    recorder_options : dict, optional
        Extra keyword arguments for :class:`~latentlens.capture.ActivationRecorder`, such as
        ``max_rows_per_step`` or ``memory_budget``.
    outlier_options : dict, optional
        Extra keyword arguments for :class:`~latentlens.scores.OutlierScorer`, such as
        ``{"metric": "cosine", "standardize": False}`` for sentence embeddings.

    Raises
    ------
    ValueError
        On an unknown ``projection``, an ``n_components`` other than 2 or 3, a non-positive
        ``publish_every`` or ``n_neighbors``, an ``alpha`` outside (0, 1), or a
        ``min_class_size`` below 2.

    Examples
    --------
    >>> layers = ["features", "penultimate"]
    >>> lens = LatentLens(model, layers=layers, logdir="runs/demo")  # doctest: +SKIP
    >>> with lens:  # doctest: +SKIP
    ...     for epoch in range(3):
    ...         train_one_epoch(model)
    ...         with lens.record(step=epoch, labels=validation_labels):
    ...             model(validation_images)
    ...         lens.publish(epoch)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Any,
        *,
        logdir: str | Path,
        run: str = "latentlens",
        pooling: str = "auto",
        projection: str = "umap",
        n_components: int = 2,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        random_state: int = 0,
        reference_step: str | int = "first",
        publish_every: int | None = None,
        drift: bool = True,
        outliers: bool = True,
        alpha: float = 0.05,
        min_class_size: int = 50,
        step_column: str = "step",
        umap_options: Mapping[str, Any] | None = None,
        recorder_options: Mapping[str, Any] | None = None,
        outlier_options: Mapping[str, Any] | None = None,
    ) -> None:
        if projection not in _PROJECTIONS:
            raise ValueError(
                f"projection must be one of {_PROJECTIONS}, got {projection!r}; "
                "use 'umap' for a new aligned map per step or 'parametric' for one fitted encoder"
            )
        if n_components not in (2, 3):
            raise ValueError(
                f"n_components must be 2 or 3 for TensorBoard's projector, got {n_components!r}"
            )
        if publish_every is not None and (not isinstance(publish_every, int) or publish_every < 1):
            raise ValueError(
                f"publish_every must be a positive integer or None, got {publish_every!r}"
            )
        if not isinstance(n_neighbors, int) or n_neighbors < 2:
            raise ValueError(f"n_neighbors must be an integer >= 2, got {n_neighbors!r}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}; 0.05 is usual")
        if (
            isinstance(min_class_size, bool)
            or not isinstance(min_class_size, int)
            or min_class_size < 2
        ):
            raise ValueError(
                f"min_class_size must be an integer >= 2, got {min_class_size!r}; 50 is the default"
            )
        if reference_step != "first" and not isinstance(reference_step, int):
            raise ValueError(
                f"reference_step must be 'first' or an integer step, got {reference_step!r}"
            )

        self.model = model
        self.logdir = Path(logdir)
        self.run = run
        self.projection = projection
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state
        self.reference_step = reference_step
        self.publish_every = publish_every
        self.compute_drift = drift
        self.compute_outliers = outliers
        self.alpha = alpha
        self.min_class_size = min_class_size
        self.step_column = step_column
        self.umap_options = dict(umap_options or {})
        self.outlier_options = dict(outlier_options or {})
        self.recorder = ActivationRecorder(
            model, layers, pooling=pooling, **dict(recorder_options or {})
        )
        self._writer: ProjectorWriter | None = None
        self._attached = False
        self._pending: dict[int, _PendingStep] = {}
        self._last_step: int | None = None
        self._published: set[int] = set()
        self._references: dict[str, _Reference] = {}
        self._previous_layouts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def attach(self) -> LatentLens:
        """Install the forward hooks; :meth:`close` removes them."""
        if not self._attached:
            self.recorder.__enter__()
            self._attached = True
        return self

    def close(self) -> None:
        """Publish the last due step, remove every hook this lens added and close the writer.

        Safe to call twice. Hooks are removed even when publishing fails.
        """
        try:
            if (
                self._attached
                and self.publish_every is not None
                and self._last_step is not None
                and self._last_step not in self._published
            ):
                self.publish(self._last_step)
        finally:
            if self._attached:
                self.recorder.__exit__(None, None, None)
                self._attached = False
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> LatentLens:
        return self.attach()

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # On an exception, publish nothing more but never leave a hook behind.
        self.publish_every = None
        self.close()

    @property
    def writer(self) -> ProjectorWriter:
        """The run's :class:`~latentlens.export.ProjectorWriter`, opened on first use."""
        if self._writer is None:
            self._writer = ProjectorWriter(self.logdir, run=self.run)
        return self._writer

    # -- recording -------------------------------------------------------------------------------

    @contextmanager
    def record(
        self,
        step: int,
        *,
        labels: Sequence[Any] | np.ndarray | None = None,
        ids: Sequence[Any] | np.ndarray | None = None,
        images: np.ndarray | None = None,
        split: str | None = None,
    ) -> Iterator[None]:
        """Record every forward pass inside the block as samples of ``step``.

        Parameters
        ----------
        step : int
            Training step or epoch the batch belongs to.
        labels : array-like of shape (batch,), optional
            Class of each sample; used for colours, per-class drift and the label column.
        ids : array-like of shape (batch,), optional
            Stable id of each sample. Maps of successive steps are aligned on shared ids. When
            omitted, the position of the sample within the step is its id, which is right when
            every step records the same data in the same order (a fixed validation set).
        images : ndarray of shape (batch, h, w) or (batch, h, w, 3), optional
            Thumbnails for the projector's sprite, values in [0, 1] or uint8.
        split : str, optional
            Free-form split name stored in the metadata.

        Raises
        ------
        ValueError
            If ``labels``, ``ids`` and ``images`` differ in length, or ``step`` is not an integer.
        RuntimeError
            If the lens is not attached.
        """
        if not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an integer, got {step!r}")
        step = int(step)
        if not self._attached:
            raise RuntimeError(
                "LatentLens is not attached: use 'with lens:' or call lens.attach() before record()"
            )
        sizes = {
            name: len(value)
            for name, value in (("labels", labels), ("ids", ids), ("images", images))
            if value is not None
        }
        if len(set(sizes.values())) > 1:
            raise ValueError(f"labels, ids and images must have one length per batch, got {sizes}")

        if self._last_step is not None and step != self._last_step:
            self._publish_if_due(self._last_step)
        self._last_step = step
        pending = self._pending.setdefault(step, _PendingStep())
        batch_size = next(iter(sizes.values()), None)
        if ids is None and batch_size is not None:
            ids = np.arange(pending.rows, pending.rows + batch_size)
            pending.generated_ids = True
        elif ids is not None:
            pending.user_ids.extend(np.asarray(ids).tolist())

        with self.recorder.record(labels=labels, ids=ids, split=split, step=step):
            yield
        if images is not None:
            pending.images.append(np.asarray(images))
        if batch_size is not None:
            pending.rows += batch_size

    def set_reference(
        self,
        layer: str,
        values: np.ndarray,
        *,
        labels: Sequence[Any] | np.ndarray | None = None,
    ) -> None:
        """Use a reference data set for ``layer`` instead of a reference step.

        Parameters
        ----------
        layer : str
            A recorded layer name (see ``lens.recorder.layer_names``).
        values : ndarray of shape (n, d)
            Activations of the reference data, for example captured on the training set.
        labels : array-like of shape (n,), optional
            Classes of the reference rows, for per-class drift.

        Raises
        ------
        ValueError
            If ``layer`` is not recorded, or ``values`` is not a finite 2-D array.
        """
        if layer not in self.recorder.layer_names:
            raise ValueError(
                f"layer {layer!r} is not recorded by this lens; recorded layers: "
                f"{self.recorder.layer_names}"
            )
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or not np.isfinite(values).all():
            raise ValueError(
                f"reference values for {layer!r} must be a finite 2-D array, "
                f"got shape {values.shape}"
            )
        label_array = None if labels is None else np.asarray(labels)
        self._references[layer] = _Reference(values=values, labels=label_array, step=None)

    # -- publishing ------------------------------------------------------------------------------

    def _publish_if_due(self, step: int) -> None:
        if self.publish_every is None or step in self._published:
            return
        if step % self.publish_every == 0:
            self.publish(step)
        else:
            self._discard(step)

    def _discard(self, step: int) -> None:
        self.recorder.clear(step=step)
        self._pending.pop(step, None)

    def publish(
        self, step: int, *, metadata: Mapping[str, Sequence[Any] | np.ndarray] | None = None
    ) -> dict[str, LayerReport]:
        """Project, score and export every recorded layer at ``step``, then free its rows.

        Parameters
        ----------
        step : int
            A step recorded with :meth:`record`.
        metadata : mapping of str to array-like, optional
            Extra projector columns, each with one value per row recorded at ``step``, in the
            order the rows were recorded (for example ``{"predicted": predictions}``).

        Returns
        -------
        dict of str to LayerReport
            One report per layer that had rows at ``step``.

        Raises
        ------
        ValueError
            If nothing was recorded at ``step``, or a metadata column has the wrong length.
        """
        step = int(step)
        reports: dict[str, LayerReport] = {}
        pending = self._pending.get(step, _PendingStep())
        images = np.concatenate(pending.images) if pending.images else None

        batches = {
            layer: self.recorder.activations(layer, step=step)
            for layer in self.recorder.layer_names
        }
        batches = {layer: acts for layer, acts in batches.items() if len(acts.values) > 0}
        if not batches:
            recorded = {s for name in self.recorder.layer_names for s in self.recorder.steps(name)}
            raise ValueError(
                f"nothing was recorded at step {step}; recorded steps: {sorted(recorded)}"
            )
        extra = {name: np.asarray(column) for name, column in (metadata or {}).items()}

        for layer, acts in batches.items():
            positions = _row_positions(acts.metadata, pending, len(acts.values))
            if pending.generated_ids and not pending.user_ids:
                # Generated ids repeat the row positions, which the exporter's index column
                # already shows.
                metadata = {k: v for k, v in acts.metadata.items() if k != "id"}
                acts = dataclasses.replace(acts, metadata=metadata)
            reports[layer] = self._publish_layer(layer, step, acts, positions, extra, images)

        self._published.add(step)
        self._discard(step)
        self.writer.flush()
        return reports

    def _publish_layer(
        self,
        layer: str,
        step: int,
        acts: Any,
        positions: np.ndarray,
        extra: Mapping[str, np.ndarray],
        images: np.ndarray | None,
    ) -> LayerReport:
        values = np.ascontiguousarray(acts.values, dtype=np.float32)
        n_rows = len(values)
        ids = np.asarray(acts.metadata["id"]) if "id" in acts.metadata else positions
        labels = np.asarray(acts.metadata["label"]) if "label" in acts.metadata else None
        report = LayerReport(layer=layer, step=step, n_rows=n_rows)

        reference = self._reference_for(layer, step, values, labels)
        is_reference_step = reference.step == step
        if not is_reference_step:
            self._score(report, reference, values, labels)
        report.layout = self._project(layer, values, ids, reference)

        columns: dict[str, Any] = {}
        if labels is not None:
            columns["label"] = labels
        for name, column in extra.items():
            columns[name] = _select_rows(column, positions, name, step)
        columns[self.step_column] = np.full(n_rows, step)
        for name in ("id", "split", "call", "token"):
            if name in acts.metadata and name not in columns:
                columns[name] = np.asarray(acts.metadata[name])
        if report.outlier_scores is not None:
            columns["outlier_score"] = report.outlier_scores
            columns["outlier_p_value"] = report.outlier_p_values
            columns["outlier"] = np.where(report.outlier_p_values < self.alpha, "yes", "no")
        if report.drift is not None:
            columns["layer_drift"] = np.full(n_rows, "yes" if report.drift.drift else "no")
        row_images = None if images is None else _select_rows(images, positions, "images", step)

        writer = self.writer
        report.tensor_name = writer.add_embedding(
            values,
            layer=layer,
            step=step,
            metadata=columns,
            images=row_images,
            layout=report.layout,
        )
        self._write_scalars_and_maps(report, labels)
        return report

    def _reference_for(
        self, layer: str, step: int, values: np.ndarray, labels: np.ndarray | None
    ) -> _Reference:
        reference = self._references.get(layer)
        if reference is None and (self.reference_step == "first" or self.reference_step == step):
            reference = _Reference(values=values.copy(), labels=labels, step=step)
            self._references[layer] = reference
        if reference is None:
            # Steps before the chosen reference step are compared with nothing.
            return _Reference(values=values, labels=labels, step=step)
        if reference.scorer is None and self.compute_outliers and len(reference.values) >= 20:
            reference.scorer = OutlierScorer(
                reference.values, random_state=self.random_state, **self.outlier_options
            )
        return reference

    def _score(
        self,
        report: LayerReport,
        reference: _Reference,
        values: np.ndarray,
        labels: np.ndarray | None,
    ) -> None:
        if reference.values.shape[1] != values.shape[1]:
            raise ValueError(
                f"layer {report.layer!r} has {values.shape[1]} features at step {report.step} "
                f"but its reference has {reference.values.shape[1]}"
            )
        if self.compute_drift and len(values) >= 2 and len(reference.values) >= 2:
            report.drift = drift_test(
                reference.values, values, alpha=self.alpha, random_state=self.random_state
            )
            if labels is not None and reference.labels is not None:
                report.class_drift = per_class_drift(
                    reference.values,
                    values,
                    reference.labels,
                    labels,
                    min_class_size=self.min_class_size,
                    alpha=self.alpha,
                    random_state=self.random_state,
                )
        if reference.scorer is not None:
            scores = reference.scorer.score(values)
            report.outlier_scores = np.asarray(scores.scores, dtype=np.float64)
            report.outlier_p_values = np.asarray(scores.p_values, dtype=np.float64)

    def _project(
        self, layer: str, values: np.ndarray, ids: np.ndarray, reference: _Reference
    ) -> np.ndarray | None:
        n_rows = len(values)
        if n_rows < max(self.n_components + 2, 4):
            logger.warning(
                "layer %r has only %d rows at this step; no map is drawn (at least %d needed)",
                layer,
                n_rows,
                max(self.n_components + 2, 4),
            )
            return None
        n_neighbors = min(self.n_neighbors, n_rows - 1)

        if self.projection == "parametric":
            if reference.parametric is None:
                from latentlens.umap.parametric import ParametricUMAP

                reference.parametric = ParametricUMAP(
                    n_neighbors=min(self.n_neighbors, len(reference.values) - 1),
                    n_components=self.n_components,
                    min_dist=self.min_dist,
                    random_state=self.random_state,
                    **self.umap_options,
                ).fit(reference.values)
            return np.asarray(reference.parametric.transform(values), dtype=np.float32)

        from latentlens.umap import UMAP

        previous = self._previous_layouts.get(layer)
        settings: dict[str, Any] = {"init": "spectral"}
        previous_rows = current_rows = np.empty(0, dtype=np.int64)
        if previous is not None:
            previous_ids, previous_layout = previous
            previous_rows, current_rows = match_rows(previous_ids, ids)
            if len(current_rows) == n_rows:
                init = np.empty((n_rows, self.n_components), dtype=np.float32)
                init[current_rows] = previous_layout[previous_rows]
                settings = {
                    "init": init,
                    "rescale_init": False,
                    "learning_rate": WARM_START_LEARNING_RATE,
                    "n_epochs": WARM_START_EPOCHS,
                }
        settings.update(self.umap_options)
        layout = UMAP(
            n_neighbors=n_neighbors,
            n_components=self.n_components,
            min_dist=self.min_dist,
            random_state=self.random_state,
            **settings,
        ).fit_transform(values)
        if previous is not None and len(current_rows) > self.n_components + 1:
            alignment = fit_alignment(layout[current_rows], previous[1][previous_rows])
            layout = apply_alignment(layout, alignment)
        layout = np.asarray(layout, dtype=np.float32)
        self._previous_layouts[layer] = (np.asarray(ids), layout)
        return layout

    def _write_scalars_and_maps(self, report: LayerReport, labels: np.ndarray | None) -> None:
        writer = self.writer
        layer, step = report.layer, report.step
        if report.drift is not None:
            writer.add_scalar(f"drift/{layer}/p_value", float(report.drift.p_value), step=step)
            writer.add_scalar(f"drift/{layer}/statistic", float(report.drift.statistic), step=step)
            writer.add_scalar(
                f"drift/{layer}/effect_size", float(report.drift.effect_size), step=step
            )
        if report.class_drift is not None:
            for row in report.class_drift.to_rows():
                if np.isfinite(row["p_value_holm"]):
                    writer.add_scalar(
                        f"drift_by_class/{layer}/{row['class']}/p_value_holm",
                        float(row["p_value_holm"]),
                        step=step,
                    )
            proportion_p_value = report.class_drift.proportion_p_value
            if np.isfinite(proportion_p_value):
                writer.add_scalar(
                    f"drift_by_class/{layer}/class_mix_p_value",
                    float(proportion_p_value),
                    step=step,
                )
        if report.outlier_p_values is not None:
            share = float(np.mean(report.outlier_p_values < self.alpha))
            writer.add_scalar(f"outliers/{layer}/share", share, step=step)
        if report.layout is None:
            return
        if labels is not None:
            writer.add_map_image(
                f"maps/{layer}/label",
                report.layout,
                color_values=labels,
                step=step,
                categorical=True,
            )
        if report.outlier_scores is not None:
            writer.add_map_image(
                f"maps/{layer}/outlier_score",
                report.layout,
                color_values=report.outlier_scores,
                step=step,
                categorical=False,
            )


def _row_positions(
    metadata: Mapping[str, np.ndarray], pending: _PendingStep, n_rows: int
) -> np.ndarray:
    """Return the position of each captured row among the rows recorded at its step.

    Capture may keep only a subset of rows (a reservoir), so per-row data given for all recorded
    rows (images, extra metadata) is selected with these positions. Without ids, the rows are
    taken to be all recorded rows in order.
    """
    if "id" not in metadata:
        return np.arange(n_rows)
    ids = np.asarray(metadata["id"])
    if pending.generated_ids and not pending.user_ids:
        return ids.astype(np.int64)
    position_of = {}
    for position, sample_id in enumerate(pending.user_ids):
        position_of.setdefault(sample_id, position)
    if len(position_of) != len(pending.user_ids):
        # Repeated ids cannot be distinguished, so assume that no row was dropped.
        return np.arange(n_rows)
    return np.asarray([position_of[sample_id] for sample_id in ids.tolist()], dtype=np.int64)


def _select_rows(column: np.ndarray, positions: np.ndarray, name: str, step: int) -> np.ndarray:
    column = np.asarray(column)
    if len(positions) and positions.max() >= len(column):
        raise ValueError(
            f"{name} has {len(column)} rows at step {step}, but {positions.max() + 1} rows were "
            "recorded; pass one value per recorded row, in recording order"
        )
    return column[positions]
