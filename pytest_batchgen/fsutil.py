"""Atomic file writes and cross-process locks.

Every file the plugin writes (outputs, the plan, the tracking file, cassettes) goes through
:func:`atomic_write` so that a crash or ``kill -9`` leaves either the old or the new content,
never half of it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from filelock import FileLock


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def lock_for(path: Path, timeout: float = 60.0) -> FileLock:
    """A lock shared by every process that edits ``path``.

    The lock file lives in the temporary folder, keyed by the resolved path, so that users'
    repositories do not collect ``.lock`` files next to their plans.
    """
    return FileLock(_lock_file(str(path)), timeout=timeout)


@lru_cache(maxsize=256)
def _lock_file(path: str) -> str:
    """The lock file of ``path`` (resolved once per spelling: a registration takes it per row)."""
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"pytest-batchgen-{key}.lock")
