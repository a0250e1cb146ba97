"""`latentlens capture`: run a transformers model over a file of inputs and save activations."""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

logger = logging.getLogger(__name__)

# A hub model id is "name" or "owner/name"; anything else that does not exist locally is a
# mistyped path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Inputs:
    """Inputs read from a file: texts or token ids, with optional labels."""

    texts: list[str] | None
    token_ids: np.ndarray | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.token_ids)


def read_inputs(path: Path, *, text_field: str = "text", label_field: str = "label") -> Inputs:
    """Read a .txt, .jsonl or .npy input file; raise click.BadParameter naming the problem."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        texts = [text for text in texts if text]
        if not texts:
            raise click.BadParameter(f"{path} has no non-empty lines", param_hint="--input")
        return Inputs(texts, None, None)

    if suffix == ".jsonl":
        texts, labels = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise click.BadParameter(
                    f"{path} line {number} is not valid JSON ({error.msg}); write one JSON "
                    "object per line",
                    param_hint="--input",
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise click.BadParameter(
                    f"{path} line {number} has no string field {text_field!r}; set --text-field "
                    "to the key that holds the text",
                    param_hint="--input",
                )
            texts.append(record[text_field])
            labels.append(record.get(label_field))
        if not texts:
            raise click.BadParameter(
                f"{path} contains no JSON objects; write one object per line", param_hint="--input"
            )
        return Inputs(texts, None, _label_column(labels))

    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise click.BadParameter(
                f"{path} is not a plain .npy array ({error}); save it with numpy.save",
                param_hint="--input",
            ) from None
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise click.BadParameter(
                f"{path} must hold integer token ids of shape (n, sequence_length), got "
                f"{array.dtype} {array.shape}",
                param_hint="--input",
            )
        return Inputs(None, array.astype(np.int64), None)

    raise click.BadParameter(
        f"{path} has suffix {suffix!r}; use a .txt (one text per line), .jsonl or .npy file",
        param_hint="--input",
    )


def _label_column(labels: list) -> np.ndarray | None:
    """Return labels as integers when all are integers, else as strings ('' for missing)."""
    if all(label is None for label in labels):
        return None
    if all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        return np.asarray(labels, dtype=np.int64)
    return np.asarray(["" if label is None else str(label) for label in labels])


def load_transformers_model(name: str, device: str):
    """Load a model and its tokenizer from a local folder or a hub id.

    Raises click.BadParameter when the folder is missing or the model cannot be loaded.
    """
    from transformers import AutoModel, AutoTokenizer

    local = Path(name).expanduser()
    if not local.exists() and not _HUB_ID.match(name):
        raise click.BadParameter(
            f"model folder {name} does not exist; pass a folder with config.json or a hub id "
            "such as sentence-transformers/all-MiniLM-L6-v2",
            param_hint="MODEL",
        )
    if local.exists() and not (local / "config.json").is_file():
        raise click.BadParameter(
            f"{local} has no config.json, so it is not a transformers model folder",
            param_hint="MODEL",
        )
    source = str(local) if local.exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise click.BadParameter(
            f"could not load model {name!r}: {error}. Check the folder or the hub id, and the "
            "network if it is a hub id",
            param_hint="MODEL",
        ) from None
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as error:
        raise click.BadParameter(
            f"cannot use device {device!r}: {error}", param_hint="--device"
        ) from None
    model.eval()
    return model, tokenizer


def capture_command(
    *,
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
    overwrite: bool = False,
) -> None:
    """Capture activations; every check runs before the output folder is touched."""
    import torch
    from tqdm import tqdm

    from latentlens.capture import ActivationRecorder, resolve_layers, save_activations

    if not list_layers:
        missing = [
            name for name, value in (("--input", input_path), ("--output", output)) if value is None
        ]
        if missing:
            raise click.UsageError(
                f"missing option {' and '.join(missing)}: capturing needs both --input and "
                "--output (only --list-layers works without them)"
            )
    network, tokenizer = load_transformers_model(model, device)
    if list_layers:
        for name, module in network.named_modules():
            if name:
                click.echo(f"{name}\t{type(module).__name__}")
        return
    if not layers:
        raise click.UsageError(
            "no --layers given; pass for example --layers 'encoder.layer.*' (see --list-layers)"
        )
    try:
        resolve_layers(network, list(layers))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--layers") from None
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise click.BadParameter(
            f"{output} is not empty; choose a new folder or pass --overwrite to replace it",
            param_hint="--output",
        )
    inputs = read_inputs(input_path, text_field=text_field, label_field=label_field)

    recorder = ActivationRecorder(network, list(layers), pooling=pooling)
    progress = tqdm(total=len(inputs), desc="capture", unit="input", file=sys.stderr)
    with recorder, torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            stop = min(start + batch_size, len(inputs))
            encoded = _encode_batch(inputs, start, stop, tokenizer, max_length, device)
            labels = None if inputs.labels is None else inputs.labels[start:stop]
            with recorder.record(labels=labels, ids=np.arange(start, stop), step=0):
                network(**encoded)
            progress.update(stop - start)
    progress.close()

    captured = {}
    for layer in recorder.layer_names:
        activations = recorder.activations(layer)
        if inputs.texts is not None:
            rows = np.asarray(activations.metadata["id"], dtype=np.int64)
            activations.metadata["text"] = np.asarray(
                [inputs.texts[row] for row in rows], dtype=object
            )
        captured[layer] = activations
    save_activations(
        output,
        captured,
        extra={"model": model, "input": str(input_path), "pooling": pooling},
    )
    for layer, activations in captured.items():
        click.echo(
            f"{layer}\t{activations.values.shape[0]} rows x {activations.values.shape[1]} features"
        )
    click.echo(f"Saved activations of {len(captured)} layers to {output}")


def _encode_batch(inputs: Inputs, start: int, stop: int, tokenizer, max_length: int, device: str):
    import torch

    if inputs.texts is not None:
        encoded = tokenizer(
            inputs.texts[start:stop],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        return {key: value.to(device) for key, value in encoded.items()}
    ids = torch.from_numpy(inputs.token_ids[start:stop, :max_length]).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {"input_ids": ids, "attention_mask": (ids != pad_id).long()}
