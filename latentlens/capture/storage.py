"""On-disk format for captured activations: one file per layer and a JSON manifest.

A folder written by :func:`save_activations` contains

- ``manifest.json``: format name and version, one entry per layer (file name, row and
  feature counts, the steps present, the metadata columns) and the caller's ``extra``;
- per layer, ``<layer>.safetensors`` with the tensor ``values`` (float32, (n, d)) and one
  tensor ``meta/<column>`` per numeric metadata column; or, with ``file_format="npy"``,
  ``<layer>.values.npy`` and ``<layer>.meta<i>.npy``.

String metadata columns (labels given as text, ``split``) are stored in the manifest.
A folder can instead hold a manifest of kind ``"shards"`` that lists sub-folders in this
same format (spill shards, or one shard per distributed rank); :func:`load_activations`
concatenates them. Every file is written under a temporary name and renamed, and the
manifest is written last, so a reader never sees a half-written capture.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentlens.capture.activations import Activations

__all__ = ["FORMAT_NAME", "load_activations", "save_activations", "write_shard_manifest"]

FORMAT_NAME = "latentlens.activations"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_FILE_FORMATS = ("safetensors", "npy")


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(temporary_path)`` and rename the result to ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    text = json.dumps(payload, indent=1, sort_keys=False)

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)

    _atomic_write(path, write)


def _file_stem(layer: str, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", layer) or "_root"
    if stem.startswith("."):
        stem = "_" + stem
    candidate, counter = stem, 1
    while candidate.lower() in used:
        candidate = f"{stem}-{counter}"
        counter += 1
    used.add(candidate.lower())
    return candidate


def _column_kind(name: str, layer: str, column: np.ndarray) -> tuple[np.ndarray, str]:
    """Return the column in a storable dtype and where it goes: ``tensor`` or ``manifest``."""
    if column.dtype.kind == "O":
        items = column.tolist()
        if all(isinstance(item, str) for item in items):
            column = np.asarray(items, dtype=str) if items else np.zeros(0, dtype="<U1")
        elif all(isinstance(item, (bool, int, float, np.number, np.bool_)) for item in items):
            column = np.asarray(items)
    if column.dtype.kind in "biuf":
        return np.ascontiguousarray(column), "tensor"
    if column.dtype.kind in "US":
        return column.astype(str), "manifest"
    raise TypeError(
        f"metadata column {name!r} of layer {layer!r} has dtype {column.dtype}, which cannot be "
        "saved; convert it to numbers or strings"
    )


def save_activations(
    folder: str | os.PathLike[str],
    activations: Mapping[str, Activations],
    *,
    extra: Mapping[str, Any] | None = None,
    file_format: str = "safetensors",
) -> Path:
    """Write captured activations of several layers to a folder.

    Parameters
    ----------
    folder : str or os.PathLike
        Target folder; created when missing. Files of an earlier capture in the same
        folder that the new manifest no longer lists are removed.
    activations : mapping of str to Activations
        Layer name to its rows and metadata.
    extra : mapping, optional
        JSON-serialisable information stored in the manifest (model name, pooling, ...).
    file_format : {"safetensors", "npy"}, default="safetensors"
        File type for values and numeric metadata columns.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    TypeError
        If an entry is not an Activations object, ``extra`` is not JSON-serialisable or a
        metadata column has a dtype other than numbers or strings.
    ValueError
        If ``activations`` is empty or ``file_format`` is unknown.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> acts = {"fc1": Activations(np.ones((2, 3), np.float32), {"step": np.array([0, 1])})}
    >>> folder = save_activations(tempfile.mkdtemp(), acts, extra={"model": "demo"})
    >>> load_activations(folder)["fc1"].metadata["step"].tolist()
    [0, 1]
    """
    if file_format not in _FILE_FORMATS:
        raise ValueError(
            f"file_format={file_format!r} is not supported; use one of {_FILE_FORMATS}"
        )
    if not isinstance(activations, Mapping) or not activations:
        raise ValueError(
            "activations must be a non-empty mapping of layer name to Activations, "
            f"got {type(activations).__name__} with {len(activations or ())} entries"
        )
    for layer, acts in activations.items():
        if not isinstance(acts, Activations):
            raise TypeError(
                f"activations[{layer!r}] is {type(acts).__name__}, not Activations; wrap the "
                "array as Activations(values, metadata)"
            )
    try:
        extra_json = json.loads(json.dumps(dict(extra or {})))
    except (TypeError, ValueError) as error:
        raise TypeError(f"extra must be JSON-serialisable: {error}") from error

    prepared = {}
    for layer, acts in activations.items():
        prepared[layer] = {
            name: _column_kind(name, layer, column) for name, column in acts.metadata.items()
        }

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    old_files = _listed_files(folder)
    used: set[str] = set()
    entries = []
    for layer, acts in activations.items():
        stem = _file_stem(layer, used)
        entry, files = _write_layer(folder, stem, layer, acts, prepared[layer], file_format)
        entries.append(entry)
        old_files.difference_update(files)

    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": "layers",
        "layers": entries,
        "extra": extra_json,
    }
    _write_json(folder / MANIFEST, manifest)
    for stale in old_files:
        (folder / stale).unlink(missing_ok=True)
    return folder


def _write_layer(
    folder: Path,
    stem: str,
    layer: str,
    acts: Activations,
    columns: Mapping[str, tuple[np.ndarray, str]],
    file_format: str,
) -> tuple[dict[str, Any], set[str]]:
    column_entries = []
    tensors = {"values": np.ascontiguousarray(acts.values, dtype=np.float32)}
    files: set[str] = set()
    for index, (name, (column, where)) in enumerate(columns.items()):
        entry: dict[str, Any] = {"name": name, "dtype": column.dtype.str, "stored": where}
        if where == "manifest":
            entry["dtype"] = "str"
            entry["values"] = column.tolist()
        elif file_format == "safetensors":
            entry["key"] = f"meta/{name}"
            tensors[entry["key"]] = column
        else:
            entry["file"] = f"{stem}.meta{index}.npy"
            tensors[entry["file"]] = column
        column_entries.append(entry)

    if file_format == "safetensors":
        from safetensors.numpy import save_file

        file_name = f"{stem}.safetensors"
        _atomic_write(folder / file_name, lambda temporary: save_file(tensors, temporary))
        files.add(file_name)
    else:
        file_name = f"{stem}.values.npy"
        for key, array in tensors.items():
            target = file_name if key == "values" else key
            _atomic_write(folder / target, lambda temporary, a=array: _save_npy(temporary, a))
            files.add(target)

    steps = acts.metadata.get("step")
    step_list = sorted({int(s) for s in np.unique(steps)}) if steps is not None else []
    entry = {
        "name": layer,
        "file": file_name,
        "rows": len(acts),
        "features": int(acts.values.shape[1]),
        "steps": step_list,
        "columns": column_entries,
    }
    return entry, files


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as stream:
        np.save(stream, array, allow_pickle=False)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST} in {folder}; pass a folder written by save_activations, "
            "ActivationRecorder.save or `latentlens capture`"
        )
    with open(path, encoding="utf-8") as stream:
        manifest = json.load(stream)
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path} is not a latentlens activations manifest (format={manifest.get('format')!r})"
        )
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {manifest['version']}, newer than this latentlens "
            f"reads ({FORMAT_VERSION}); upgrade latentlens"
        )
    return manifest


def _listed_files(folder: Path) -> set[str]:
    """Files named by an existing manifest of kind ``layers`` in ``folder``."""
    try:
        manifest = _read_manifest(folder)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return set()
    files = set()
    for entry in manifest.get("layers", []):
        files.add(entry["file"])
        files.update(c["file"] for c in entry.get("columns", []) if "file" in c)
    return files


def _inside(folder: Path, relative: str) -> Path:
    path = (folder / relative).resolve()
    if folder.resolve() not in path.parents and path != folder.resolve():
        raise ValueError(f"manifest in {folder} points outside the folder: {relative!r}")
    return path


def _load_layer(folder: Path, entry: Mapping[str, Any]) -> Activations:
    data_file = _inside(folder, entry["file"])
    if data_file.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(data_file))
        values = tensors["values"]
    else:
        tensors = {}
        values = np.load(data_file, allow_pickle=False)
    metadata = {}
    for column in entry.get("columns", []):
        if column["stored"] == "manifest":
            metadata[column["name"]] = np.asarray(column["values"], dtype=str)
        elif "key" in column:
            metadata[column["name"]] = tensors[column["key"]]
        else:
            metadata[column["name"]] = np.load(_inside(folder, column["file"]), allow_pickle=False)
    values = values.reshape(int(entry["rows"]), int(entry["features"]))
    return Activations(values, metadata, layer=entry["name"])


def load_activations(
    folder: str | os.PathLike[str], *, layers: list[str] | None = None
) -> dict[str, Activations]:
    """Read activations written by :func:`save_activations` or a recorder.

    Parameters
    ----------
    folder : str or os.PathLike
        A folder with ``manifest.json``: one capture, or shards (spilled chunks, one
        folder per distributed rank) that are concatenated in manifest order.
    layers : list of str, optional
        Read only these layers.

    Returns
    -------
    dict of str to Activations
        In the order of the manifest. Shards of distributed ranks add a ``"rank"`` column.

    Raises
    ------
    FileNotFoundError
        If the folder has no manifest.
    ValueError
        If the manifest is of another format or a newer version, names a file outside
        the folder, or a requested layer is missing.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest.get("kind", "layers") == "shards":
        parts: dict[str, list[Activations]] = {}
        for shard in manifest.get("shards", []):
            loaded = load_activations(_inside(folder, shard["path"]), layers=None)
            for name, acts in loaded.items():
                if "rank" in shard:
                    acts.metadata["rank"] = np.full(len(acts), int(shard["rank"]), dtype=np.int64)
                parts.setdefault(name, []).append(acts)
        result = {name: Activations.concat(chunks, layer=name) for name, chunks in parts.items()}
    else:
        result = {entry["name"]: _load_layer(folder, entry) for entry in manifest.get("layers", [])}
    if layers is not None:
        missing = [name for name in layers if name not in result]
        if missing:
            raise ValueError(f"layers {missing} are not in {folder}; available: {list(result)}")
        result = {name: result[name] for name in layers}
    return result


def read_extra(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the ``extra`` mapping stored in a folder's manifest."""
    return dict(_read_manifest(Path(folder)).get("extra", {}))


def write_shard_manifest(
    folder: str | os.PathLike[str],
    shards: list[dict[str, Any]],
    *,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a manifest of kind ``"shards"`` that lists sub-folders.

    Each entry of ``shards`` is ``{"path": <relative folder>}``, with ``"rank"`` for
    the shard of a distributed rank.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        _inside(folder, shard["path"])
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": "shards",
        "shards": list(shards),
        "extra": dict(extra or {}),
    }
    _write_json(folder / MANIFEST, manifest)
    return folder
