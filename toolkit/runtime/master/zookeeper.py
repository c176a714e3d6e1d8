"""Recovery mode ``zookeeper``: the leader is the master that holds a lock in Apache ZooKeeper
(through kazoo), and the records live under a root there (``--zookeeper-dir``, ``/ember``).

The same records as the filesystem store, one znode each (``<root>/<kind>/<id>``), written
before the master acknowledges what they record. Every write is fenced: one ZooKeeper
transaction checks that the leader's lock node still exists, so a master that lost its lock
(its session expired, or a standby took the lock of what looked like a dead leader) can never
record, nor so acknowledge, anything more. A leader whose ZooKeeper session is suspended or
lost, or whose lock node goes, can no longer know that it leads: it exits non-zero, so that its
supervisor starts it again, as a standby (Spark's master exits 0 there, and
``Restart=on-failure`` never brings it back). kazoo is imported only by a master in this mode.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from toolkit.errors import ConfigError, FatalError
from toolkit.runtime.master.store import SHAPES, RecordStore

logger = logging.getLogger("toolkit.runtime.master")

SESSION_TIMEOUT = 4.0
"""Seconds without ZooKeeper before the leader's session (and its lock) expires."""
LOCK_MARK = "__lock__"
"""kazoo's lock nodes are ``<uuid>__lock__<sequence>``: the lowest sequence holds the lock."""


class ZooKeeperStore(RecordStore):
    def __init__(self, url: str, root: str, session_timeout: float = SESSION_TIMEOUT) -> None:
        from kazoo.client import KazooClient

        if not root.startswith("/"):
            raise ConfigError(f"--zookeeper-dir {root!r} must start with /")
        self.root = root.rstrip("/") or "/ember"
        self.directory = f"zookeeper {url}{self.root}"
        # reconnect at once, then every second at most: a server of the ensemble going, or
        # ZooKeeper coming back after a while, is noticed within a second
        self.client = KazooClient(hosts=url, timeout=session_timeout, connection_retry={
            "max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0})
        self.grace = session_timeout
        """How long a suspended session may take to come back: when the ensemble's leader
        dies, the others first elect a new one (a second or two). The fenced writes make the
        wait safe: meanwhile this master can record, and so acknowledge, nothing."""
        self.client.add_listener(self._on_state)
        self.identity = socket.gethostname()
        """What this master's lock node says: its RPC address, ``host:port``, once it listens."""
        self.on_lost: Callable[[str], None] = lambda why: None
        self._lock: Any = None
        self._held: str | None = None
        """The path of this leader's lock node: every write checks that it still exists."""
        self._leading = False
        self._started = False
        self._announced = False
        self._said_unconnected = False
        self._down_since = 0.0

    def _on_state(self, state: str) -> None:
        """kazoo's thread. A lost session is a lost lock: step down. A suspended one (the
        connection to its ZooKeeper server went) gets the grace to come back, as it does when
        another server of the ensemble takes it over."""
        if state == "LOST":
            self._step_down("its ZooKeeper session expired")
        elif state == "SUSPENDED" and self._leading:
            timer = threading.Timer(self.grace, self._check_connected)
            timer.daemon = True
            timer.start()

    def _check_connected(self) -> None:
        if self.client.state != "CONNECTED":
            self._step_down(f"cut off from ZooKeeper for {self.grace:g} s (its session "
                            "may have expired, and another master may lead)")

    def _on_lock_event(self, event: Any) -> None:
        """kazoo's thread: this leader's lock node changed, which means it is gone."""
        if event.path == self._held:
            self._step_down(f"its lock {event.path} is gone ({event.type.lower()})")

    def _step_down(self, why: str) -> None:
        if self._leading:
            self._leading = False
            self.on_lost(why)

    # Leadership ----------------------------------------------------------------------------

    @property
    def _lock_path(self) -> str:
        return f"{self.root}/leader"

    def try_lead(self) -> bool:
        """Take the lock if no other master holds it. Never blocks once started: while the
        connection is down, kazoo reconnects in its own thread and this says no."""
        from kazoo.exceptions import KazooException

        try:
            if not self._started:
                self.client.start_async()  # kazoo connects, and reconnects, on its own
                self._started = True
            if not self.client.connected:
                now = time.monotonic()
                self._down_since = self._down_since or now
                if now - self._down_since > 2 and not self._said_unconnected:
                    logger.warning("ZooKeeper does not answer at %s; standing by",
                                   self.directory)
                    self._said_unconnected = True
                return False
            self._down_since, self._said_unconnected = 0.0, False
            self._announce()
            if self._lock is None:
                self._lock = self.client.Lock(self._lock_path, self.identity)
            if not self._lock.acquire(blocking=False):
                return False
            for kind in SHAPES:  # fenced writes are transactions, which make no parents
                self.client.ensure_path(f"{self.root}/{kind}")
            self._held = f"{self._lock_path}/{self._lock.node}"
            self._leading = True
            if self.client.exists(self._held, watch=self._on_lock_event) is None:
                self._step_down(f"its lock {self._held} is gone")
        except KazooException as exc:  # the connection went meanwhile: try again later
            logger.info("ZooKeeper at %s: %r; standing by", self.directory, exc)
            return False
        return self._leading

    def close(self) -> None:
        """A clean exit: the session ends, and the lock node with it, at once."""
        self._leading = False
        try:
            self.client.stop()
            self.client.close()
        except Exception as exc:  # exiting anyway: the session then expires by itself
            logger.warning("Closing the ZooKeeper session: %r", exc)

    def leader(self) -> tuple[str, str] | None:
        """The leading master's lock node and identity (``host:port``), when another leads."""
        from kazoo.exceptions import KazooException

        try:
            nodes = [n for n in self.client.get_children(self._lock_path) if LOCK_MARK in n]
            if not nodes:
                return None
            first = min(nodes, key=lambda n: n.rsplit(LOCK_MARK, 1)[1])
            if self._lock is not None and first == self._lock.node:
                return None
            data = self.client.get(f"{self._lock_path}/{first}")[0]
        except KazooException:
            return None
        return first, bytes(data or b"").decode("utf-8", "replace")

    def _announce(self) -> None:
        """This master's ephemeral node under ``masters/`` (its ``host:port``), for the web UI
        to list every master of the cluster: it goes with this master's session."""
        from kazoo.exceptions import NodeExistsError

        if self._announced or ":" not in self.identity:
            return
        with contextlib.suppress(NodeExistsError):  # an earlier session not yet expired
            self.client.create(f"{self.root}/masters/{self.identity}", ephemeral=True,
                               makepath=True)
        self._announced = True

    def masters(self) -> list[tuple[str, bool]]:
        """Every master of the cluster (its ``host:port``), and whether it leads; the leader
        first. For the web UI: empty when ZooKeeper does not answer."""
        from kazoo.exceptions import KazooException

        if not self.client.connected:
            return []
        try:
            every = self.client.get_children(f"{self.root}/masters")
            nodes = [n for n in self.client.get_children(self._lock_path) if LOCK_MARK in n]
            first = min(nodes, key=lambda n: n.rsplit(LOCK_MARK, 1)[1]) if nodes else None
            leading = (bytes(self.client.get(f"{self._lock_path}/{first}")[0] or b"").decode(
                "utf-8", "replace") if first else None)
        except KazooException:
            return []
        return sorted(((m, m == leading) for m in every), key=lambda found: not found[1])

    def depose(self, node: str, identity: str) -> bool:
        """Remove a dead leader's lock node, if it is still that leader's: the next contender
        leads without waiting for the dead one's session to expire."""
        from kazoo.exceptions import KazooException

        path = f"{self._lock_path}/{node}"
        try:
            data, stat = self.client.get(path)
            if bytes(data or b"").decode("utf-8", "replace") != identity:
                return False
            self.client.delete(path, version=stat.version)
        except KazooException:
            return False
        return True

    # Records -------------------------------------------------------------------------------

    def _path(self, kind: str, key: str) -> str:
        return f"{self.root}/{kind}/{key}"

    def _retrying(self, path: str, action: Callable[[], Any]) -> Any:
        """``action``, again while the connection is down for less than the grace (another
        server of the ensemble takes the session over); then, or on any other error, a
        FatalError: nothing unrecorded is acknowledged."""
        from kazoo.exceptions import ConnectionLoss

        deadline = time.monotonic() + self.grace
        while True:
            try:
                return action()
            except ConnectionLoss:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise FatalError(f"cannot record {path}: cut off from ZooKeeper") from None
            except FatalError:
                raise
            except Exception as exc:  # kazoo raises many kinds
                raise FatalError(f"cannot record {path} in ZooKeeper: {exc!r}") from None

    def _fenced(self, path: str, write: Callable[[Any, bool], None]) -> None:
        """One transaction: this master's lock node still exists, and the write (told whether
        the node exists)."""
        if self._held is None:
            raise FatalError(f"cannot record {path}: this master does not lead")
        held = self._held

        def attempt() -> list[Any]:
            tx = self.client.transaction()
            tx.check(held, 0)
            write(tx, self.client.exists(path) is not None)
            return list(tx.commit())

        results = self._retrying(path, attempt)
        if isinstance(results[0], Exception):
            raise FatalError(f"cannot record {path}: this master's lock {self._held} is gone "
                             "from ZooKeeper, so another master may lead")
        if isinstance(results[-1], Exception):
            raise FatalError(f"cannot record {path} in ZooKeeper: {results[-1]!r}")

    def _put(self, kind: str, key: str, record: msgspec.Struct) -> None:
        data = msgspec.json.encode(record)
        path = self._path(kind, key)
        self._fenced(path, lambda tx, exists: tx.set_data(path, data) if exists else (
            tx.create(path, data)))

    def _forget(self, kind: str, key: str) -> None:
        path = self._path(kind, key)
        if self._retrying(path, lambda: self.client.exists(path)) is not None:
            self._fenced(path, lambda tx, exists: tx.delete(path) if exists else tx.check(
                self._held, 0))

    def _keys(self, kind: str) -> list[str]:
        path = f"{self.root}/{kind}"
        return sorted(self.client.get_children(path)) if self.client.exists(path) else []

    def _load(self, kind: str, key: str) -> bytes:
        return bytes(self.client.get(self._path(kind, key))[0])
