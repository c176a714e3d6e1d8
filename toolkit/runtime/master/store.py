"""What the master persists, and where: nowhere (``none``) or a directory (``filesystem``).

A record is written durably (the file, then its directory, fsynced; written to a temporary name
and renamed) before the master acknowledges what it records. Each record is one file,
``<kind>-<id>.json``, so a torn or corrupt one costs that record only: it is reported and
skipped, never fatal. The directory holds a lock file: the master that holds its exclusive
lock leads; another on the same directory waits as a standby, so two never both lead.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from toolkit.base.files import sync_dir, write_atomic
from toolkit.errors import ConfigError, FatalError
from toolkit.runtime import messages as m
from toolkit.runtime.records import AppInfo, DriverInfo, WorkerInfo
from toolkit.runtime.states import ApplicationState, DriverState, ExecutorState

logger = logging.getLogger("toolkit.runtime.master")




class StoredWorker(msgspec.Struct):
    id: str
    host: str
    port: int
    cores: int
    memory: int
    webui_url: str


class StoredDriver(msgspec.Struct):
    id: str
    desc: m.DriverDescription
    submitted: float
    state: DriverState
    worker_id: str | None = None
    worker_host_port: str | None = None
    started: float | None = None
    message: str | None = None
    exit_code: int | None = None
    relaunched_as: str | None = None


class StoredExecutor(msgspec.Struct):
    exec_id: int
    worker_id: str
    worker_host_port: str
    cores: int
    memory: int
    state: ExecutorState


class StoredApp(msgspec.Struct):
    id: str
    desc: m.ApplicationDescription
    submitted: float
    state: ApplicationState
    executors: list[StoredExecutor]
    next_exec_id: int
    retry_count: int = 0
    ended: float | None = None


@dataclass
class Recovered:
    """What a leader reads back."""

    workers: list[StoredWorker] = field(default_factory=list)
    drivers: list[StoredDriver] = field(default_factory=list)
    """Not finished: running on a stored worker, or waiting."""
    completed: list[StoredDriver] = field(default_factory=list)
    """Finished, oldest first."""
    apps: list[StoredApp] = field(default_factory=list)
    """Not finished, with their executors."""
    completed_apps: list[StoredApp] = field(default_factory=list)


class Store(Protocol):
    def put_worker(self, worker: WorkerInfo) -> None: ...
    def forget_worker(self, worker_id: str) -> None: ...
    def put_driver(self, driver: DriverInfo) -> None: ...
    def complete_driver(self, driver: DriverInfo, dropped: list[DriverInfo]) -> None: ...
    def forget_completed(self) -> None: ...
    def put_app(self, app: AppInfo) -> None: ...
    def complete_app(self, app: AppInfo, dropped: list[AppInfo]) -> None: ...


class NoStore:
    """Recovery mode ``none``: nothing survives the master."""

    def put_worker(self, worker: WorkerInfo) -> None:
        pass

    def forget_worker(self, worker_id: str) -> None:
        pass

    def put_driver(self, driver: DriverInfo) -> None:
        pass

    def complete_driver(self, driver: DriverInfo, dropped: list[DriverInfo]) -> None:
        pass

    def forget_completed(self) -> None:
        pass

    def put_app(self, app: AppInfo) -> None:
        pass

    def complete_app(self, app: AppInfo, dropped: list[AppInfo]) -> None:
        pass


def stored_app(app: AppInfo) -> StoredApp:
    return StoredApp(app.id, app.desc, app.submitted, app.state, [
        StoredExecutor(e.exec_id, e.worker_id, e.worker_host_port, e.cores, e.memory, e.state)
        for e in app.executors.values()], app.next_exec_id, app.retry_count, app.ended)


def stored_driver(driver: DriverInfo) -> StoredDriver:
    return StoredDriver(driver.id, driver.desc, driver.submitted, driver.state,
                        driver.worker_id, driver.worker_host_port, driver.started,
                        driver.message, driver.exit_code, driver.relaunched_as)


SHAPES: dict[str, type[msgspec.Struct]] = {
    "worker": StoredWorker, "driver": StoredDriver, "done": StoredDriver, "app": StoredApp,
    "ended": StoredApp}
"""Each kind of record: its shape. ``done`` and ``ended``: finished drivers and applications."""


class RecordStore:
    """What every store does with the records; a store says how to write, remove, list and
    read one (``_put``, ``_forget``, ``_keys``, ``_load``) and how to make removals last
    (``_sync``). Every write raises FatalError when it cannot be made: nothing is
    acknowledged that is not recorded."""

    directory: Any
    """Where the records are (a Path, or ZooKeeper's address and root), as the log says it."""

    def _put(self, kind: str, key: str, record: msgspec.Struct) -> None:
        raise NotImplementedError

    def _forget(self, kind: str, key: str) -> None:
        raise NotImplementedError

    def _keys(self, kind: str) -> list[str]:
        raise NotImplementedError

    def _load(self, kind: str, key: str) -> bytes:
        raise NotImplementedError

    def _sync(self) -> None:
        pass

    def put_worker(self, worker: WorkerInfo) -> None:
        self._put("worker", worker.id, StoredWorker(worker.id, worker.host, worker.port,
                                                    worker.cores, worker.memory,
                                                    worker.webui_url))

    def forget_worker(self, worker_id: str) -> None:
        self._forget("worker", worker_id)
        self._sync()

    def put_driver(self, driver: DriverInfo) -> None:
        self._put("driver", driver.id, stored_driver(driver))

    def complete_driver(self, driver: DriverInfo, dropped: list[DriverInfo]) -> None:
        """Active -> history (bounded as in memory: what the master dropped goes here too)."""
        self._put("done", driver.id, stored_driver(driver))
        self._forget("driver", driver.id)
        for old in dropped:
            self._forget("done", old.id)
        self._sync()

    def forget_completed(self) -> None:
        for kind in ("done", "ended"):
            for key in self._keys(kind):
                self._forget(kind, key)
        self._sync()

    def put_app(self, app: AppInfo) -> None:
        self._put("app", app.id, stored_app(app))

    def complete_app(self, app: AppInfo, dropped: list[AppInfo]) -> None:
        self._put("ended", app.id, stored_app(app))
        self._forget("app", app.id)
        for old in dropped:
            self._forget("ended", old.id)
        self._sync()

    def read(self) -> Recovered:
        """Every record; one that cannot be read is reported (which, why) and skipped."""
        found = Recovered()
        into: dict[str, list[Any]] = {
            "worker": found.workers, "driver": found.drivers, "done": found.completed,
            "app": found.apps, "ended": found.completed_apps}
        for kind, shape in SHAPES.items():
            for key in self._keys(kind):
                try:
                    into[kind].append(msgspec.json.decode(self._load(kind, key), type=shape))
                except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    logger.error("Skipping the unreadable recovery record %s %s in %s: %s",
                                 kind, key, self.directory, exc)
        found.drivers.sort(key=lambda d: (d.submitted, d.id))
        found.completed.sort(key=lambda d: (d.submitted, d.id))
        found.apps.sort(key=lambda a: (a.submitted, a.id))
        found.completed_apps.sort(key=lambda a: (a.ended or a.submitted, a.id))
        return found


class FileStore(RecordStore):
    """Recovery mode ``filesystem``: one file per record in ``directory``.

    Leadership is an exclusive lock on ``leader.lock``, which the leader fills with its
    ``host:port``. Every master also locks a file of its own, ``masters/<host:port>``, while it
    runs: the web UI lists the masters whose file is locked (the kernel drops a lock however
    its process ends, so a dead master's file is left behind but never listed)."""

    def __init__(self, directory: Path) -> None:
        self.directory: Path = directory
        self.identity = ""
        """This master's ``host:port``, set when it starts listening."""
        self._lock: int | None = None
        self._announced: int | None = None

    # Leadership ----------------------------------------------------------------------------

    def try_lead(self) -> bool:
        """Take the directory's exclusive lock if no other master holds it; kept until this
        process ends (the kernel releases it then, however it ends)."""
        if self._lock is not None:
            return True
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._announce()
            fd = os.open(self.directory / "leader.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # a master that can never lead says why, and ends
            raise FatalError(f"recovery directory {self.directory}: "
                             f"{exc.strerror or exc} (uid {os.geteuid()})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.identity.encode(), 0)
        return True

    def _announce(self) -> None:
        if self._announced is not None or ":" not in self.identity:
            return
        (self.directory / "masters").mkdir(exist_ok=True, mode=0o700)
        fd = os.open(self.directory / "masters" / self.identity, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a master on this very address still runs: it is listed
            os.close(fd)
            return
        self._announced = fd

    def masters(self) -> list[tuple[str, bool]]:
        """Every running master on this directory (its ``host:port``), and whether it leads;
        the leader first. For the web UI."""
        with contextlib.suppress(OSError):  # not yet: another master's look at it collided
            self._announce()
        try:
            names = sorted(p.name for p in (self.directory / "masters").iterdir())
            leader = (self.directory / "leader.lock").read_text(errors="replace")
        except OSError:
            return []
        running = [name for name in names if self._held(self.directory / "masters" / name)]
        return sorted(((name, name == leader) for name in running), key=lambda m: not m[1])

    @staticmethod
    def _held(path: Path) -> bool:
        """Whether a running process holds ``path``'s lock (this one included: a lock taken
        through another open file conflicts with it too)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # Records: <directory>/<kind>-<id>.json ---------------------------------------------------

    def _path(self, kind: str, key: str) -> Path:
        return Path(self.directory) / f"{kind}-{key}.json"

    def _put(self, kind: str, key: str, record: msgspec.Struct) -> None:
        path = self._path(kind, key)
        try:
            write_atomic(path, msgspec.json.encode(record), 0o600, durable=True)
        except (OSError, ConfigError) as exc:  # nothing is acknowledged that is not recorded
            raise FatalError(f"cannot record {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None

    def _forget(self, kind: str, key: str) -> None:
        try:
            self._path(kind, key).unlink(missing_ok=True)
        except OSError as exc:
            raise FatalError(f"cannot remove {self._path(kind, key)}: "
                             f"{exc.strerror or exc}") from None

    def _keys(self, kind: str) -> list[str]:
        return sorted(p.name[len(kind) + 1:-len(".json")]
                      for p in self.directory.glob(f"{kind}-*.json"))

    def _load(self, kind: str, key: str) -> bytes:
        return self._path(kind, key).read_bytes()

    def _sync(self) -> None:
        try:
            sync_dir(self.directory)
        except OSError as exc:
            raise FatalError(f"cannot sync {self.directory}: {exc.strerror or exc}") from None
