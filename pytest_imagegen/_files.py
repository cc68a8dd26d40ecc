"""Atomic file writes, shared by cassettes and reports (stdlib only, cheap to import)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def temp_prefix(path: Path) -> str:
    """The prefix of the temp files an atomic write of ``path`` leaves while it runs."""
    return f".{path.name}."


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temp file in the same folder, are fsynced, and the file is renamed
    into place; on any error the temp file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private; cassettes and reports are meant to be shared.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        # Make the rename itself durable (not possible on every platform).
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
