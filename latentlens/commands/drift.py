"""`latentlens drift`: compare two folders of saved activations layer by layer."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from latentlens.commands.saved import load_saved, select_layers


def drift_command(
    *,
    reference: Path,
    current: Path,
    layers: tuple[str, ...],
    method: str,
    alpha: float,
    permutations: int,
    by_class: bool,
    seed: int,
    as_json: bool,
) -> bool:
    """Print a drift report and return whether any layer drifted."""
    from latentlens.cli import echo_json
    from latentlens.scores import drift_test, per_class_drift

    reference_sets = load_saved(reference, "REFERENCE")
    current_sets = load_saved(current, "CURRENT")
    chosen = select_layers(current_sets, reference_sets, layers)
    for layer in chosen:
        ref_dims = reference_sets[layer].values.shape[1]
        cur_dims = current_sets[layer].values.shape[1]
        if ref_dims != cur_dims:
            raise click.BadParameter(
                f"layer {layer!r} has {ref_dims} features in REFERENCE but {cur_dims} in "
                "CURRENT; compare captures of the same model and pooling",
                param_hint="CURRENT",
            )
        if by_class and not (
            "label" in reference_sets[layer].metadata and "label" in current_sets[layer].metadata
        ):
            raise click.BadParameter(
                f"--by-class needs a label column in both folders, and layer {layer!r} lacks one",
                param_hint="--by-class",
            )

    report = []
    for layer in chosen:
        ref, cur = reference_sets[layer], current_sets[layer]
        result = drift_test(
            ref.values,
            cur.values,
            method=method,
            alpha=alpha,
            n_permutations=permutations,
            random_state=seed,
        )
        entry = {"layer": layer, **result.to_dict()}
        if by_class:
            classes = per_class_drift(
                ref.values,
                cur.values,
                np.asarray(ref.metadata["label"]),
                np.asarray(cur.metadata["label"]),
                method=method,
                alpha=alpha,
                random_state=seed,
            )
            entry["by_class"] = classes.to_dict()
        report.append(entry)

    if as_json:
        echo_json({"reference": str(reference), "current": str(current), "layers": report})
    else:
        _print_table(report)
    return any(bool(entry["drift"]) for entry in report)


def _print_table(report: list[dict]) -> None:
    header = (
        f"{'layer':<40} {'n_ref':>7} {'n_cur':>7} {'statistic':>11} {'p_value':>9} "
        f"{'effect':>9}  drift"
    )
    click.echo(header)
    for entry in report:
        click.echo(
            f"{entry['layer']:<40} {entry['n_reference']:>7} {entry['n_current']:>7} "
            f"{entry['statistic']:>11.4g} {entry['p_value']:>9.4g} {entry['effect_size']:>9.4g}  "
            f"{'yes' if entry['drift'] else 'no'}"
        )
        by_class = entry.get("by_class")
        if by_class is None:
            continue
        click.echo("  per class, p-values Holm-adjusted across the tested classes:")
        for row in by_class["classes"]:
            if row["status"] != "tested":
                click.echo(f"  class {row['class']!s:<32} {row['status']}")
                continue
            click.echo(
                f"  class {row['class']!s:<32} {row['n_reference']:>7} {row['n_current']:>7} "
                f"{row['statistic']:>11.4g} {row['p_value_holm']:>9.4g} "
                f"{row['effect_size']:>9.4g}  {'yes' if row['drift'] else 'no'}"
            )
        click.echo(
            f"  class mix (chi-square)                 p_value {by_class['proportion_p_value']:.4g}"
            f"  {'yes' if by_class['proportion_drift'] else 'no'}"
        )
