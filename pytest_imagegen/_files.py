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


def write_problem(path: Path, *, directory: bool) -> str | None:
    """Why files cannot be written at ``path`` (a file, or a ``directory`` to write into);
    None when they can. Probes by creating (and removing) a temp file where the real write
    will happen, so that a read-only mount, ``/proc`` or a file in the way are found before a
    run is spent, whatever the permission bits claim (root ignores them)."""
    folder = path if directory else path.parent
    if not directory and path.is_dir():
        return f"{path} is a directory"
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a directory"
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".imagegen-probe-", suffix=".tmp", dir=folder)
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None
