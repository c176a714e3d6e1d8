"""Recovery mode ``zookeeper``: the leader is the master that holds a lock in Apache ZooKeeper
(through kazoo), and the records live under a root there (``--zookeeper-dir``, ``/ember``).

The same records as the filesystem store, one znode each (``<root>/<kind>/<id>``), written
before the master acknowledges what they record. A leader whose ZooKeeper session is suspended
or lost can no longer know that it leads: it exits non-zero, so that its supervisor starts it
again, as a standby (Spark's master exits 0 there, and ``Restart=on-failure`` never brings it
back). kazoo is imported only by a master in this mode.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import msgspec

from toolkit.errors import ConfigError, FatalError
from toolkit.runtime.master.store import RecordStore

logger = logging.getLogger("toolkit.runtime.master")

SESSION_TIMEOUT = 4.0
"""Seconds without ZooKeeper before the leader's session (and its lock) expires."""


class ZooKeeperStore(RecordStore):
    def __init__(self, url: str, root: str, session_timeout: float = SESSION_TIMEOUT) -> None:
        from kazoo.client import KazooClient

        if not root.startswith("/"):
            raise ConfigError(f"--zookeeper-dir {root!r} must start with /")
        self.root = root.rstrip("/") or "/ember"
        self.directory = f"zookeeper {url}{self.root}"
        self.client = KazooClient(hosts=url, timeout=session_timeout)
        self.client.add_listener(self._on_state)
        self.on_lost: Callable[[], None] = lambda: None
        self._lock: Any = None
        self._leading = False

    def _on_state(self, state: str) -> None:
        """kazoo's thread: a leader whose session is suspended or lost steps down."""
        if self._leading and state in ("SUSPENDED", "LOST"):
            self._leading = False
            self.on_lost()

    # Leadership ----------------------------------------------------------------------------

    def try_lead(self) -> bool:
        from kazoo.handlers.threading import KazooTimeoutError

        try:
            if not self.client.connected:
                self.client.start(timeout=2)
            if self._lock is None:
                self._lock = self.client.Lock(f"{self.root}/leader", socket.gethostname())
            self._leading = bool(self._lock.acquire(blocking=False))
        except KazooTimeoutError:
            logger.warning("ZooKeeper does not answer at %s; standing by", self.directory)
            return False
        return self._leading

    # Records -------------------------------------------------------------------------------

    def _path(self, kind: str, key: str) -> str:
        return f"{self.root}/{kind}/{key}"

    def _put(self, kind: str, key: str, record: msgspec.Struct) -> None:
        data = msgspec.json.encode(record)
        path = self._path(kind, key)
        try:
            if self.client.exists(path):
                self.client.set(path, data)
            else:
                self.client.create(path, data, makepath=True)
        except Exception as exc:  # kazoo raises many kinds; nothing unrecorded is acknowledged
            raise FatalError(f"cannot record {path} in ZooKeeper: {exc!r}") from None

    def _forget(self, kind: str, key: str) -> None:
        path = self._path(kind, key)
        try:
            if self.client.exists(path):
                self.client.delete(path)
        except Exception as exc:
            raise FatalError(f"cannot remove {path} from ZooKeeper: {exc!r}") from None

    def _keys(self, kind: str) -> list[str]:
        path = f"{self.root}/{kind}"
        return sorted(self.client.get_children(path)) if self.client.exists(path) else []

    def _load(self, kind: str, key: str) -> bytes:
        return bytes(self.client.get(self._path(kind, key))[0])
