"""Atomic file writes: every file lands under a temporary name and is renamed into place.

A reader (TensorBoard, another writer) therefore reads either the previous file or the
complete new one, never a half-written file, also when the writing process dies.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX advisory locks; on other systems the config merge runs unlocked.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def atomic_write_bytes(path: Path, data: bytes | memoryview, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    Parameters
    ----------
    path : Path
        Destination; its folder must exist.
    data : bytes or memoryview
        The whole content.
    sync : bool, default=False
        Call ``fsync`` before the rename (used for the small config file).
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: Path, text: str, *, sync: bool = False) -> None:
    """Write ``text`` as UTF-8 with LF line endings, atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8", errors="replace"), sync=sync)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) while the block runs.

    Two writers on one run, in one process or several, then merge the projector
    config one after the other. Without ``fcntl`` the block runs unlocked. A lost update
    is then repaired by the next write, because the merge rebuilds every latentlens
    entry from the files on disk.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    handle = open(path, "a+b")  # noqa: SIM115 - closed in finally
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
