"""Loading folders of saved activations for the commands, with errors that name the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import click


def load_saved(path: Path, where: str) -> dict[str, Any]:
    """Load a folder written by `latentlens capture`; raise click.BadParameter if it is not one."""
    from latentlens.capture import load_activations

    try:
        sets = load_activations(path)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise click.BadParameter(
            f"{path} is not a folder of saved activations ({error}); create one with "
            "`latentlens capture`",
            param_hint=where,
        ) from None
    if not sets:
        raise click.BadParameter(
            f"{path} contains no layers; capture at least one layer", param_hint=where
        )
    return sets


def select_layers(
    current: dict[str, Any], reference: dict[str, Any] | None, requested: tuple[str, ...]
) -> list[str]:
    """Return the requested layers, or all layers present in every folder, in saved order."""
    available = [layer for layer in current if reference is None or layer in reference]
    if not available:
        raise click.BadParameter(
            f"the folders share no layer: {sorted(current)} vs {sorted(reference or {})}",
            param_hint="--layers",
        )
    if not requested:
        return available
    missing = [layer for layer in requested if layer not in available]
    if missing:
        closest = difflib.get_close_matches(missing[0], available, n=3)
        hint = f" Did you mean {', '.join(closest)}?" if closest else ""
        raise click.BadParameter(
            f"layers {missing} are not in the saved activations; available: {available}.{hint}",
            param_hint="--layers",
        )
    return list(requested)
