"""Read a logdir back exactly as TensorBoard serves it, without a server or a browser.

`read_projector` builds TensorBoard's own projector plugin over the logdir (the same
objects ``tensorboard --logdir`` builds), queries its HTTP routes in process through
werkzeug's test client, and parses the responses the way the projector's front end
does. Tests use it to check that every export opens; users can use it to check a
logdir before sharing it.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

BROWSER_NUM_ROWS = 100_000  # rows the projector front end requests


def parse_metadata_text(text: str) -> tuple[list[str], list[list[str]]]:
    """Split served metadata the way the projector front end does.

    Blank (whitespace-only) lines are skipped; the first line is a header exactly when it
    contains a tab, otherwise the single column is called ``label``. Returns
    ``(column_names, rows)`` with one row (list of str) per point.
    """
    names: list[str] | None = None
    rows: list[list[str]] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        if names is None:
            if "\t" in line:
                names = line.split("\t")
                continue
            names = ["label"]
        rows.append(line.split("\t"))
    return names or ["label"], rows


def _app(logdir: str):
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider as data_provider_module
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider_module.MultiplexerDataProvider(multiplexer, logdir)
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider, multiplexer=multiplexer)
    plugin = ProjectorPlugin(context)
    return Client(application.TensorBoardWSGI([plugin])), provider


def _get(client, route: str, errors: list, **params) -> tuple[int, bytes, str]:
    url = f"/data/plugin/projector/{route}"
    if params:
        url += "?" + urlencode(params)
    try:
        response = client.get(url)
    except Exception as error:  # a running server returns these as a 500 response
        errors.append({"route": route, "params": params, "status": 500, "message": repr(error)})
        return 500, b"", ""
    body = response.get_data()
    if response.status_code != 200:
        errors.append(
            {
                "route": route,
                "params": params,
                "status": response.status_code,
                "message": body.decode("utf-8", errors="replace"),
            }
        )
    return response.status_code, body, response.headers.get("Content-Type", "")


def _plugin_enabled(client, timeout: float) -> bool:
    """Poll ``/data/plugins_listing`` until the projector is active (it decides in a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        listing = json.loads(client.get("/data/plugins_listing").get_data())
        if listing.get("projector", {}).get("enabled"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _read_summaries(provider) -> tuple[dict, dict]:
    from tensorboard import context as tb_context

    ctx = tb_context.RequestContext()
    scalars: dict[str, dict[str, list[tuple[int, float]]]] = {}
    listing = provider.list_scalars(ctx, experiment_id="", plugin_name="scalars")
    for run, tags in listing.items():
        data = provider.read_scalars(
            ctx,
            experiment_id="",
            plugin_name="scalars",
            downsample=10**9,
            run_tag_filter=_filter(run, tags),
        )
        scalars[run] = {
            tag: [(d.step, d.value) for d in series] for tag, series in data.get(run, {}).items()
        }

    images: dict[str, dict[str, list[tuple[int, np.ndarray]]]] = {}
    listing = provider.list_blob_sequences(ctx, experiment_id="", plugin_name="images")
    for run, tags in listing.items():
        data = provider.read_blob_sequences(
            ctx,
            experiment_id="",
            plugin_name="images",
            downsample=10**9,
            run_tag_filter=_filter(run, tags),
        )
        images[run] = {}
        for tag, series in data.get(run, {}).items():
            decoded = []
            for datum in series:
                # values: [width, height, png, ...] as blob references
                png = provider.read_blob(ctx, blob_key=datum.values[2].blob_key)
                decoded.append((datum.step, _decode_image(png)))
            images[run][tag] = decoded
    return scalars, images


def _filter(run, tags):
    from tensorboard.data import provider as provider_module

    return provider_module.RunTagFilter(runs=[run], tags=list(tags))


def _decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).copy()


def read_projector(
    logdir: str | os.PathLike,
    *,
    num_rows: int | None = BROWSER_NUM_ROWS,
    summaries: bool = True,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Read every projector embedding (and scalars and images) of a logdir through TensorBoard.

    Parameters
    ----------
    logdir : str or os.PathLike
        What ``tensorboard --logdir`` would be given.
    num_rows : int or None, default=100000
        Rows asked of ``/tensor`` and ``/metadata``, as the browser does; ``None`` for all.
    summaries : bool, default=True
        Also read scalars and images through TensorBoard's data provider.
    timeout : float, default=10
        Seconds to wait for the projector plugin to decide whether it is active.

    Returns
    -------
    dict
        Keys of the result:

        - ``enabled``: bool, whether the Projector tab is enabled.
        - ``runs``: list of run names from ``/runs``.
        - ``errors``: list of non-200 responses (route, params, status, message). An
          exception inside the plugin is reported as status 500, as a running server
          would report it.
        - ``embeddings``: ``{run: {tensor_name: entry}}``. Each ``entry`` contains
          ``info`` (the config entry from ``/info``, camelCase), ``shape`` (n, d),
          ``tensor`` (float32 array from ``/tensor``), ``metadata_columns`` and
          ``metadata_rows`` (from ``/metadata``, split as the front end does; None
          without metadata), ``bookmarks`` (parsed ``/bookmarks`` JSON or None) and
          ``sprite`` (uint8 array from ``/sprite_image`` or None).
        - With ``summaries``: ``scalars`` ``{run: {tag: [(step, value)]}}`` and
          ``images`` ``{run: {tag: [(step, array)]}}``.

    Raises
    ------
    FileNotFoundError
        If ``logdir`` is not a folder.

    Examples
    --------
    >>> result = read_projector("runs/")  # doctest: +SKIP
    >>> result["embeddings"]["demo"]["fc1_step000003"]["tensor"].shape  # doctest: +SKIP
    (1797, 64)
    """
    logdir = str(Path(logdir))
    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"logdir {logdir!r} is not a folder")
    client, provider = _app(logdir)
    errors: list[dict] = []
    limit = {} if num_rows is None else {"num_rows": int(num_rows)}

    status, body, _ = _get(client, "runs", errors)
    runs = json.loads(body) if status == 200 else []
    embeddings: dict[str, dict[str, dict]] = {}
    for run in runs:
        status, body, _ = _get(client, "info", errors, run=run)
        if status != 200:
            continue
        config = json.loads(body)
        embeddings[run] = {}
        for info in config.get("embeddings", []):
            name = info.get("tensorName", "")
            entry: dict[str, Any] = {
                "info": info,
                "shape": tuple(int(s) for s in info.get("tensorShape", [])),
            }
            status, body, _ = _get(client, "tensor", errors, run=run, name=name, **limit)
            entry["tensor"] = None
            if status == 200 and len(entry["shape"]) == 2:
                entry["tensor"] = np.frombuffer(body, dtype="<f4").reshape(-1, entry["shape"][1])

            entry["metadata_columns"] = entry["metadata_rows"] = None
            if info.get("metadataPath"):
                status, body, _ = _get(client, "metadata", errors, run=run, name=name, **limit)
                if status == 200:
                    columns, rows = parse_metadata_text(body.decode("utf-8"))
                    entry["metadata_columns"], entry["metadata_rows"] = columns, rows

            entry["bookmarks"] = None
            if info.get("bookmarksPath"):
                status, body, _ = _get(client, "bookmarks", errors, run=run, name=name)
                if status == 200:
                    entry["bookmarks"] = json.loads(body)

            entry["sprite"] = None
            if info.get("sprite", {}).get("imagePath"):
                status, body, _ = _get(client, "sprite_image", errors, run=run, name=name)
                if status == 200:
                    entry["sprite"] = _decode_image(body)
            embeddings[run][name] = entry

    result: dict[str, Any] = {
        "logdir": logdir,
        "enabled": _plugin_enabled(client, timeout) if runs else False,
        "runs": runs,
        "errors": errors,
        "embeddings": embeddings,
    }
    if summaries:
        result["scalars"], result["images"] = _read_summaries(provider)
    return result
