"""`latentlens project`: map saved activations and write them to a TensorBoard run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from latentlens.commands.saved import load_saved, select_layers

logger = logging.getLogger(__name__)

#: Metadata columns that the projector gets when a saved set has them, in this order.
_COLUMNS = ("label", "text", "id", "split", "step", "call", "token")


def project_command(
    *,
    activations: Path,
    logdir: Path,
    run: str,
    reference: Path | None,
    method: str,
    layers: tuple[str, ...],
    n_components: int,
    n_neighbors: int,
    min_dist: float,
    seed: int,
    outlier_metric: str = "cosine",
) -> None:
    """Fit a map per layer, score against the reference if given, and export everything."""
    from tqdm import tqdm

    from latentlens.export import ProjectorWriter
    from latentlens.scores import OutlierScorer, drift_test

    current_sets = load_saved(activations, "ACTIVATIONS")
    reference_sets = load_saved(reference, "--reference") if reference is not None else None
    chosen = select_layers(current_sets, reference_sets, layers)
    for layer in chosen:
        _check_rows(current_sets[layer].values, layer, n_components, "ACTIVATIONS")
        if reference_sets is not None:
            _check_rows(reference_sets[layer].values, layer, n_components, "--reference")

    with ProjectorWriter(logdir, run=run) as writer:
        for layer in tqdm(chosen, desc="project", unit="layer", file=sys.stderr):
            current = current_sets[layer]
            columns = _columns(current.metadata)
            if reference_sets is None:
                layout = _fit_map(
                    current.values, method, n_components, n_neighbors, min_dist, seed
                )[1]
                name = writer.add_embedding(
                    current.values, layer=layer, step=0, metadata=columns, layout=layout
                )
                _write_map(writer, layer, layout, columns, None, step=0)
                click.echo(f"{layer}\t{len(current.values)} rows\t{name}")
                continue

            ref = reference_sets[layer]
            model, ref_layout = _fit_map(
                ref.values, method, n_components, n_neighbors, min_dist, seed
            )
            layout = np.asarray(model.transform(current.values), dtype=np.float32)
            result = drift_test(ref.values, current.values, random_state=seed)
            # Standardising features would undo what the cosine distance compares: directions.
            scorer = OutlierScorer(
                ref.values,
                metric=outlier_metric,
                standardize=outlier_metric == "euclidean",
                random_state=seed,
            )
            scores = scorer.score(current.values)

            ref_columns = _columns(ref.metadata)
            ref_columns["set"] = ["reference"] * len(ref.values)
            columns["set"] = ["current"] * len(current.values)
            columns["outlier_score"] = scores.scores
            columns["outlier_p_value"] = scores.p_values
            columns["outlier"] = np.where(np.asarray(scores.p_values) < 0.05, "yes", "no")
            writer.add_embedding(
                ref.values, layer=layer, step=0, metadata=ref_columns, layout=ref_layout
            )
            name = writer.add_embedding(
                current.values, layer=layer, step=1, metadata=columns, layout=layout
            )
            writer.add_scalar(f"drift/{layer}/p_value", float(result.p_value), step=1)
            writer.add_scalar(f"drift/{layer}/statistic", float(result.statistic), step=1)
            writer.add_scalar(f"drift/{layer}/effect_size", float(result.effect_size), step=1)
            _write_map(writer, layer, layout, columns, scores.scores, step=1)
            click.echo(f"{layer}\t{len(current.values)} rows\t{name}\tdrift p={result.p_value:.4g}")
    click.echo(f"Wrote run {run!r} to {logdir}. Open it with:")
    click.echo(f"  tensorboard --logdir {logdir}")


def _check_rows(values: np.ndarray, layer: str, n_components: int, where: str) -> None:
    if len(values) < n_components + 2:
        raise click.BadParameter(
            f"layer {layer!r} has only {len(values)} rows; a map needs at least "
            f"{n_components + 2}. Capture more inputs",
            param_hint=where,
        )


def _fit_map(
    values: np.ndarray, method: str, n_components: int, n_neighbors: int, min_dist: float, seed: int
) -> tuple[Any, np.ndarray]:
    n_neighbors = min(n_neighbors, len(values) - 1)
    if method == "parametric":
        from latentlens.umap.parametric import ParametricUMAP as Model
    else:
        from latentlens.umap import UMAP as Model
    model = Model(
        n_neighbors=n_neighbors, n_components=n_components, min_dist=min_dist, random_state=seed
    )
    layout = np.asarray(model.fit_transform(values), dtype=np.float32)
    return model, layout


def _columns(metadata: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        name: metadata[name]
        for name in _COLUMNS
        if name in metadata and np.asarray(metadata[name]).ndim == 1
    }


def _write_map(writer, layer: str, layout, columns, outlier_scores, *, step: int) -> None:
    if "label" in columns:
        writer.add_map_image(
            f"maps/{layer}/label",
            layout,
            color_values=columns["label"],
            step=step,
            categorical=True,
        )
    if outlier_scores is not None:
        writer.add_map_image(
            f"maps/{layer}/outlier_score",
            layout,
            color_values=outlier_scores,
            step=step,
            categorical=False,
        )
