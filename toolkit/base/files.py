"""Files written atomically and only when changed, here or on a host that is handed them.

A host's files (its ember-env.sh, the cluster secret) can travel on the standard input of the
`ember daemon` command that uses them: one SSH session per host instead of an SFTP session and
then a command, each of which costs the login's rc files. The bundle is one JSON line.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import secrets
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
    folder = open_dir(path.parent)
    try:
        return _write_in(folder, path.name, data, mode, durable)
    finally:
        os.close(folder)


def _write_in(folder: int, name: str, data: bytes, mode: int, durable: bool) -> bool:
    with contextlib.suppress(OSError):  # missing, or a link: written anew (never through)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
        with os.fdopen(fd, "rb") as handle:
            if handle.read() == data and (os.fstat(handle.fileno()).st_mode & 0o777) == mode:
                return False
    if not mode & 0o077:  # a private file: others may pass through, not list or write
        current = os.fstat(folder).st_mode & 0o777
        if current & 0o066:
            os.fchmod(folder, current & ~0o066)
    tmp = f".{name}.{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        if durable:
            os.fsync(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise
    return True


MAX_LINKS = 40
"""Symbolic links open_dir follows in one path before it calls it a loop (as the kernel does)."""


def open_dir(folder: Path, create: bool = True) -> int:
    """``folder`` opened as a directory (made when missing, 0755), for writing in it.

    As root, through no symbolic link that another user could have made: a role's run user
    owns its directories, and could replace ``logs`` with a link to ``/etc`` so that root's
    next write (a supervisor program, the secret) or chown lands there. Each part of the path
    is opened without following links. A link in a directory only root may write to is read
    and followed, part by part, by the same rule; below the first directory that someone else
    may write to, a link (or anything not a directory) is refused, naming it."""
    if os.geteuid() != 0:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    parts = list(folder.absolute().parts[1:])
    fd, trusted, links = os.open("/", os.O_RDONLY | os.O_DIRECTORY), True, 0
    try:
        while parts:
            part = parts.pop(0)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            try:
                inner = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                inner = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                target = _link(fd, part)
                if target is None:  # a file where a directory should be
                    raise
                if not trusted or links >= MAX_LINKS:
                    raise ConfigError(
                        f"{folder}: {part} is a symbolic link, inside a directory that users "
                        f"other than root may write to (or one of too many): root will not "
                        f"write or hand over anything through it. Make it a real directory, "
                        f"or point the setting at the real one") from None
                links += 1
                if target.startswith("/"):
                    os.close(fd)
                    fd, trusted = os.open("/", os.O_RDONLY | os.O_DIRECTORY), True
                parts[:0] = [p for p in target.split("/") if p and p != "."]
                continue
            os.close(fd)
            fd = inner
            stat = os.fstat(fd)  # only root may change what is in it
            trusted = trusted and stat.st_uid == 0 and not stat.st_mode & 0o022
        return fd
    except BaseException:
        os.close(fd)
        raise


def remove(path: Path) -> None:
    """Remove the file ``path`` if it is there, through its directory as open_dir opens it (as
    root: never in a directory a link of another user leads to)."""
    try:
        folder = open_dir(path.parent, create=False)
    except FileNotFoundError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=folder)
    finally:
        os.close(folder)


def names_in(folder: Path) -> list[str]:
    """The names in ``folder`` (none when it is missing), listed as open_dir opens it."""
    try:
        fd = open_dir(folder, create=False)
    except FileNotFoundError:
        return []
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """``path`` opened with ``flags`` (plus O_NOFOLLOW and O_CREAT), through its directory as
    open_dir opens it: as root, never a file another user's link leads to."""
    folder = open_dir(path.parent)
    try:
        return os.open(path.name, flags | os.O_NOFOLLOW | os.O_CREAT, mode, dir_fd=folder)
    finally:
        os.close(folder)


def _link(folder: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=folder)
    except OSError:  # not a link: a file where a directory should be
        return None


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
