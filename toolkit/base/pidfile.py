"""Pid files: written atomically by the process itself, removed only by their owner."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_pid_file(path: str | Path, pid: int | None = None) -> None:
    """Write ``pid`` (default: this process) so a reader never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{pid if pid is not None else os.getpid()}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_pid_file(path: str | Path) -> int | None:
    """The pid in ``path``, or None when the file is missing or does not hold a pid."""
    try:
        text = Path(path).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def remove_pid_file(path: str | Path, pid: int | None = None) -> None:
    """Remove ``path`` if it still names ``pid`` (default: this process)."""
    if read_pid_file(path) == (pid if pid is not None else os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
