"""projector_config.pbtxt, merged instead of replaced, and rebuilt from files on disk.

Each latentlens embedding lives in its own folder,
``<run>/projector/<tensor_name>/<version>/``, whose last file written is
``embedding.pbtxt``: the embedding's ``EmbeddingInfo`` with paths relative to the run.
A folder without that file is an export that did not finish and is never referenced.

The run's ``projector_config.pbtxt`` is then merged under a lock. Entries already there
(from torch's ``SummaryWriter.add_embedding``, another writer, an earlier session) are
kept. Each latentlens entry is replaced by the newest finished version of its tensor
name, and every name appears exactly once. Because the latentlens entries
are rebuilt from disk, a config that another tool overwrote is repaired by the next
merge.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
from pathlib import Path

from google.protobuf import text_format
from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo, ProjectorConfig

from latentlens.export._files import atomic_write_text, file_lock

logger = logging.getLogger(__name__)

CONFIG_NAME = "projector_config.pbtxt"
LOCK_NAME = ".projector_config.lock"
EMBEDDINGS_DIR = "projector"
FRAGMENT_NAME = "embedding.pbtxt"
PLUGIN_ASSETS_DIR = os.path.join("plugins", "org_tensorflow_tensorboard_projector")
# An unfinished version folder this old is a dead export, not one still being written.
STALE_SECONDS = 3600.0


_version_counter = itertools.count()


def new_version() -> str:
    """Return a folder name that sorts after earlier versions (time, then process, then count)."""
    return f"v{time.time_ns():020d}-{os.getpid()}-{next(_version_counter):06d}"


def read_config(path: Path) -> ProjectorConfig:
    """Parse a projector config; an unreadable one is logged and treated as empty."""
    config = ProjectorConfig()
    if not path.is_file():
        return config
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except (text_format.ParseError, UnicodeDecodeError, OSError) as error:
        logger.warning("ignoring unreadable projector config %s: %s", path, error)
        return ProjectorConfig()
    return config


def finished_versions(run_dir: Path) -> dict[str, tuple[Path, EmbeddingInfo]]:
    """The newest finished version of every latentlens embedding in ``run_dir``."""
    found: dict[str, tuple[Path, EmbeddingInfo]] = {}
    root = run_dir / EMBEDDINGS_DIR
    if not root.is_dir():
        return found
    for name_dir in sorted(root.iterdir()):
        if not name_dir.is_dir():
            continue
        for version_dir in sorted(name_dir.iterdir(), reverse=True):
            fragment = version_dir / FRAGMENT_NAME
            if not fragment.is_file():
                continue
            info = EmbeddingInfo()
            try:
                text_format.Parse(fragment.read_text(encoding="utf-8"), info)
            except (text_format.ParseError, UnicodeDecodeError, OSError) as error:
                logger.warning("skipping unreadable embedding fragment %s: %s", fragment, error)
                continue
            found[info.tensor_name] = (version_dir, info)
            break
    return found


def _is_ours(info: EmbeddingInfo) -> bool:
    return info.tensor_path.replace("\\", "/").startswith(EMBEDDINGS_DIR + "/")


def merge_config(run_dir: Path) -> ProjectorConfig:
    """Merge the run's projector config with every finished latentlens embedding; write atomically.

    Returns the config as written.
    """
    run_dir = Path(run_dir)
    with file_lock(run_dir / LOCK_NAME):
        existing = read_config(run_dir / CONFIG_NAME)
        ours = finished_versions(run_dir)

        merged = ProjectorConfig()
        merged.CopyFrom(existing)
        del merged.embeddings[:]
        placed: set[str] = set()
        for info in existing.embeddings:
            name = info.tensor_name
            if name in placed:
                continue  # a duplicate (e.g. tensorboardX appends): keep the first place
            if name in ours:
                merged.embeddings.add().CopyFrom(ours[name][1])
            elif _is_ours(info):
                continue  # its folder is gone
            else:
                merged.embeddings.add().CopyFrom(info)
            placed.add(name)
        for name in sorted(ours):
            if name not in placed:
                merged.embeddings.add().CopyFrom(ours[name][1])
                placed.add(name)

        text = text_format.MessageToString(merged)
        if not (run_dir / CONFIG_NAME).is_file() or text != text_format.MessageToString(existing):
            atomic_write_text(run_dir / CONFIG_NAME, text, sync=True)
        _prune_old_versions(run_dir, ours)

    if (run_dir / PLUGIN_ASSETS_DIR / CONFIG_NAME).is_file():
        logger.warning(
            "%s also has %s; TensorBoard reads that one instead of %s and will not show "
            "latentlens embeddings; move or delete it",
            run_dir,
            os.path.join(PLUGIN_ASSETS_DIR, CONFIG_NAME),
            CONFIG_NAME,
        )
    return merged


def _prune_old_versions(run_dir: Path, ours: dict[str, tuple[Path, EmbeddingInfo]]) -> None:
    """Delete versions older than the referenced one: finished ones, and unfinished stale ones."""
    now = time.time()
    for current, _info in ours.values():
        for version_dir in current.parent.iterdir():
            if not version_dir.is_dir() or version_dir.name >= current.name:
                continue
            finished = (version_dir / FRAGMENT_NAME).is_file()
            with contextlib.suppress(OSError):
                if finished or now - version_dir.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(version_dir)
