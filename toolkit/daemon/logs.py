"""Log files: rotation on every start (``.out.1`` newest .. ``.out.N``) and tails for errors."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from pathlib import Path


def rotated(log: Path, n: int) -> Path:
    return log.with_name(f"{log.name}.{n}")


def rotate(log: Path, max_files: int) -> None:
    """Shift ``log`` to ``.1`` and older ones up, keeping ``max_files`` old logs; 0: keep appending.

    Renames run oldest first, so a crash part-way loses nothing: every file still exists
    under one name or the next.
    """
    if max_files <= 0 or not log.exists():
        return
    with contextlib.suppress(FileNotFoundError):
        rotated(log, max_files).unlink()
    for n in range(max_files - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(rotated(log, n), rotated(log, n + 1))
    os.replace(log, rotated(log, 1))
    for extra in log.parent.glob(f"{log.name}.*"):
        suffix = extra.name[len(log.name) + 1:]
        if suffix.isdigit() and int(suffix) > max_files:
            extra.unlink()


def tail(log: Path, lines: int = 10) -> list[str]:
    try:
        with open(log, errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except FileNotFoundError:
        return []
