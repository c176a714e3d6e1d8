"""Files written atomically and only when changed, here or on a host that is handed them.

A host's files (its ember-env.sh, the cluster secret) can travel on the standard input of the
`ember daemon` command that uses them: one SSH session per host instead of an SFTP session and
then a command, each of which costs the login's rc files. The bundle is one JSON line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from toolkit.errors import ConfigError


def write_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> bool:
    """Temp file + rename, unless the same bytes and mode are already there; True if written.

    A private file (no group/other bits) goes in a directory made 0700 first, and its temp file
    is never readable by others (mkstemp creates it 0600). ``durable`` (the default): the data
    and the rename reach the disk (fsync of the file, then of its directory) before this
    returns, so a power loss leaves the old file or the new one, never an empty one (a secret,
    a unit, a recovery record).
    """
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if not mode & 0o077:
        path.parent.chmod(0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            sync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def sync_dir(directory: Path) -> None:
    """fsync a directory: the names created, renamed or removed in it reach the disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bundle(files: Iterable[tuple[str, bytes, int]]) -> bytes:
    """(absolute path, content, mode) triples as one JSON line."""
    return json.dumps([{"path": path, "mode": mode, "data": base64.b64encode(data).decode()}
                       for path, data, mode in files]).encode() + b"\n"


def bundle_paths(line: bytes) -> list[Path]:
    """The paths a bundle holds (a bad bundle holds none: install_bundle says why)."""
    try:
        return [Path(e["path"]) for e in json.loads(line)]
    except (ValueError, TypeError, KeyError):
        return []


def install_bundle(line: bytes) -> list[Path]:
    """Write every file of a bundle (see ``bundle``); the paths that changed."""
    try:
        entries = json.loads(line)
        files = [(Path(e["path"]), base64.b64decode(e["data"], validate=True), int(e["mode"]))
                 for e in entries]
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"the files on standard input are not a valid bundle: {exc}") from None
    for path, _, mode in files:
        if not path.is_absolute() or ".." in path.parts or not 0 <= mode <= 0o777:
            raise ConfigError(f"refusing to install {path} with mode {mode:o}: paths must be "
                              f"absolute, modes plain permission bits")
    return [path for path, data, mode in files if write_atomic(path, data, mode)]
