"""Log files: rotation on every start (``.out.1`` newest .. ``.out.N``) and tails for errors."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from toolkit.errors import ConfigError


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


def checked_pattern(text: str) -> str:
    """A ``--grep`` pattern, compiled once where it is typed: a bad one is named before any
    host is asked (on every host it would fail the same way)."""
    try:
        re.compile(text)
    except re.error as exc:
        raise ConfigError(f"--grep {text!r} is not a regular expression: {exc}") from None
    return text


def tail(log: Path, lines: int = 10) -> list[str]:
    try:
        with open(log, errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except FileNotFoundError:
        return []


def show(log: Path, lines: int, pattern: str | None, follow: bool,
         say: Callable[[str], None], poll: float = 0.2) -> int:
    """Print the last ``lines`` (matching ``pattern``), then, with ``follow``, new ones as they
    come, across rotations (like ``tail -F``). 1 when the log does not exist and not following."""
    match = re.compile(pattern).search if pattern else (lambda _line: True)
    if not log.exists() and not follow:
        say(f"no log at {log}")
        return 1
    for line in tail(log, lines) if not pattern else _matching_tail(log, lines, match):
        say(line)
    if not follow:
        return 0
    position = log.stat().st_size if log.exists() else 0
    inode = log.stat().st_ino if log.exists() else None
    pending = ""
    parent = os.getppid()
    while True:
        time.sleep(poll)
        if os.getppid() != parent:  # whoever asked (fab, an ssh session) is gone
            return 0
        try:
            info = log.stat()
        except FileNotFoundError:
            continue
        if info.st_ino != inode or info.st_size < position:  # rotated or truncated
            inode, position = info.st_ino, 0
        if info.st_size == position:
            continue
        with open(log, errors="replace") as handle:
            handle.seek(position)
            pending += handle.read()
            position = handle.tell()
        *complete, pending = pending.split("\n")
        for line in complete:
            if match(line):
                say(line)


def _matching_tail(log: Path, lines: int, match: Callable[[str], object]) -> list[str]:
    try:
        with open(log, errors="replace") as handle:
            return list(deque((line.rstrip("\n") for line in handle if match(line)),
                              maxlen=lines))
    except FileNotFoundError:
        return []
