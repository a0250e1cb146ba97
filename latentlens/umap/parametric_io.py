"""Save and load ParametricUMAP as a folder of ``config.json`` and ``model.safetensors``.

Neither file can carry code: the config is plain JSON and safetensors stores only
named tensors, so loading a model never imports or executes anything from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_NAME = "latentlens.ParametricUMAP"
FORMAT_VERSION = 1


def _replace_atomically(folder: Path, name: str, write) -> None:
    """Write ``folder / name`` through ``write(temporary_path)``, then rename it into place."""
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, folder / name)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def save_model(
    folder: str | os.PathLike, config: dict[str, Any], modules: dict[str, nn.Module]
) -> Path:
    """Write ``config`` and the state dicts of ``modules`` (prefixed by their key) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            # safetensors rejects tensors that share memory or are not contiguous.
            tensors[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()

    full_config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **config}
    text = json.dumps(full_config, indent=2, sort_keys=True)

    _replace_atomically(folder, WEIGHTS_NAME, lambda path: save_file(tensors, path))
    _replace_atomically(
        folder, CONFIG_NAME, lambda path: Path(path).write_text(text, encoding="utf-8")
    )
    return folder


def read_model(
    folder: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Read a saved folder; return the config and the state dict of each module, by prefix."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    weights_path = folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; a ParametricUMAP folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                "as written by ParametricUMAP.save."
            )

    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{config_path} is not a ParametricUMAP config (format={config.get('format')!r})."
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version={config.get('format_version')!r}; "
            f"this latentlens reads version {FORMAT_VERSION}."
        )

    state_dicts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(weights_path).items():
        prefix, _, name = key.partition(".")
        state_dicts.setdefault(prefix, {})[name] = value
    return config, state_dicts


def load_state_checked(module: nn.Module, state: dict[str, torch.Tensor], role: str) -> None:
    """Load ``state`` into ``module`` strictly, with an error naming every mismatch."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise ValueError(
            f"the {role} given to ParametricUMAP.load does not match the saved weights "
            f"(missing {missing}, unexpected {unexpected}, shape differs for {reshaped}); "
            f"pass a {role} built with the same architecture as the one that was saved."
        )
    module.load_state_dict(state, strict=True)
