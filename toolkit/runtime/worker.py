"""The Worker: registers with the master(s), heartbeats, re-registers when the link is lost."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError, WireError
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.endpoint import Endpoint
from toolkit.runtime.wire import Connection

logger = logging.getLogger(__name__)

REGISTER_FIRST_DELAY = 0.1
REGISTER_MAX_DELAY = 1.0
REFUSED_RETRY = 2.0


def registration_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential from 0.1 s, capped at 1 s so a worker started before its master joins within
    about a second of the master coming up; "equal jitter" (half fixed, half random) keeps a
    restarted cluster's workers from connecting in lockstep.
    """
    ceiling = min(REGISTER_MAX_DELAY, REGISTER_FIRST_DELAY * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def worker_id(host: str, port: int, now: float) -> str:
    return f"worker-{time.strftime('%Y%m%d%H%M%S', time.localtime(now))}-{host}-{port}"


@dataclass(frozen=True)
class WorkerConfig:
    masters: tuple[tuple[str, int], ...]
    host: str
    cores: int
    memory: int
    work_dir: Path
    port: int = 0
    webui_port: int = 8081
    register_timeout: float = 600.0
    secret: bytes | None = field(default=None, repr=False)


class Worker(Endpoint):
    role = "worker"

    def __init__(self, config: WorkerConfig, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config.secret)
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.start_time = clock()
        self.port = config.port
        self.webui_port = config.webui_port
        self.id = ""
        self.registered = False
        self.master: Connection | None = None
        self.master_url = ""
        self.master_webui_url = ""
        self.cores_used = 0
        self.memory_used = 0
        self._unregistered_since = monotonic()
        self._links: dict[str, asyncio.Task[Any]] = {}
        self._link_conns: dict[str, Connection] = {}
        self._heartbeat: asyncio.Task[Any] | None = None

    @property
    def webui_url(self) -> str:
        return f"http://{self.config.host}:{self.webui_port}"

    def _register_message(self, master_address: str) -> m.RegisterWorker:
        return m.RegisterWorker(self.id, self.config.host, self.port, self.config.cores,
                                self.config.memory, self.webui_url, master_address)

    def is_ready(self) -> bool:
        return self.registered

    # Handlers ----------------------------------------------------------------------------

    def on_master_connected(self, msg: m.MasterConnected, conn: Connection | None) -> None:
        if conn is None or conn.closed:
            return
        if self.registered:
            conn.close()
            return
        self._link_conns[msg.address] = conn
        conn.send(self._register_message(msg.address))

    def on_registered_worker(self, msg: m.RegisteredWorker, conn: Connection | None) -> None:
        if conn is None:
            return
        if self.registered and conn is not self.master:
            conn.close()
            return
        self.registered = True
        self.master = conn
        self.master_url = msg.master_url
        self.master_webui_url = msg.master_webui_url
        logger.info("Successfully registered with master %s%s", msg.master_url,
                    " (re-registration)" if msg.duplicate else "")
        self._drop_links_except(conn)
        self._start_heartbeat(msg.heartbeat_interval)
        self.announce_if_ready()

    def on_register_worker_failed(self, msg: m.RegisterWorkerFailed,
                                  conn: Connection | None) -> None:
        """Refused (say, the master still lists a crashed predecessor at this address).

        Spark exits here, and a supervisor soon gives up restarting it. The master drops the
        predecessor within its timeout, so Ember asks again until --register-timeout.
        """
        if self.registered or conn is None:
            return
        logger.warning("Master refused this worker: %s; asking again in %g s", msg.message,
                       REFUSED_RETRY)
        address = next((a for a, c in self._link_conns.items() if c is conn), conn.peer)
        self.after(REFUSED_RETRY, m.MasterConnected(address), conn)

    def on_master_in_standby(self, msg: m.MasterInStandby, conn: Connection | None) -> None:
        logger.info("Master at %s is in standby; waiting for the active master",
                    conn.peer if conn else "?")

    def on_reconnect_worker(self, msg: m.ReconnectWorker, conn: Connection | None) -> None:
        logger.info("Master %s asked this worker to reconnect; re-registering", msg.master_url)
        self._lose_registration()
        if conn is not None and not conn.closed:
            address = next((a for a, c in self._link_conns.items() if c is conn), conn.peer)
            conn.send(self._register_message(address))
        else:
            self._ensure_links()

    def on_send_heartbeat(self, msg: m.SendHeartbeat, conn: Connection | None) -> None:
        if self.registered and self.master is not None:
            self.master.send(m.Heartbeat(self.id))

    def on_check_registration(self, msg: m.CheckRegistration, conn: Connection | None) -> None:
        waited = self.monotonic() - self._unregistered_since
        if not self.registered and waited > self.config.register_timeout:
            logger.error("All masters are unresponsive after %.0f s; giving up", waited)
            self.stop(1)

    def on_connection_closed(self, msg: m.ConnectionClosed, conn: Connection | None) -> None:
        for address, link in list(self._link_conns.items()):
            if link is conn:
                del self._link_conns[address]
        if conn is not None and conn is self.master:
            logger.warning("Connection to master %s lost (%s); re-registering", self.master_url,
                           msg.reason)
            self.master = None
            self._lose_registration()
            self._ensure_links()

    # Helpers -----------------------------------------------------------------------------

    def _lose_registration(self) -> None:
        if self.registered:
            self._unregistered_since = self.monotonic()
        self.registered = False

    def _drop_links_except(self, keep: Connection) -> None:
        """Registered: stop connecting to the other masters and close their links."""
        for address, conn in list(self._link_conns.items()):
            if conn is not keep:
                conn.close()
                del self._link_conns[address]
        for address, task in list(self._links.items()):
            if address not in self._link_conns:
                task.cancel()
                del self._links[address]

    def _start_heartbeat(self, interval: float) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._heartbeat = self.every(interval, m.SendHeartbeat)

    def _ensure_links(self) -> None:
        """Keep one connecting task per master until a master accepts this worker."""
        for host, port in self.config.masters:
            address = f"{host}:{port}"
            task = self._links.get(address)
            if task is None or task.done():
                self._links[address] = self.spawn(self._link(host, port, address),
                                                  name=f"link {address}")

    async def _link(self, host: str, port: int, address: str) -> None:
        attempt = 0
        last_error = ""
        while True:
            try:
                conn = await wire.connect(host, port, self.secret)
            except (OSError, WireError) as exc:
                attempt += 1
                error = str(exc) or exc.__class__.__name__
                if error != last_error:
                    logger.warning("Cannot register with master %s yet: %s", address, error)
                    last_error = error
                await asyncio.sleep(registration_delay(attempt))
                continue
            attempt, last_error = 0, ""
            self.post(m.MasterConnected(address), conn)
            await self.serve_connection(conn)
            await asyncio.sleep(registration_delay(1))

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self.config.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"worker work dir {self.config.work_dir}: {exc.strerror}") from None
        self.start_consumer()
        self.port = await self.listen(self.config.host, self.config.port)
        self.id = worker_id(self.config.host, self.port, self.start_time)
        logger.info("Starting worker %s with %d cores, %d MiB RAM, work dir %s", self.id,
                    self.config.cores, self.config.memory, self.config.work_dir)
        self.every(1.0, m.CheckRegistration)
        self._ensure_links()

    async def shutdown(self, reason: str) -> None:
        master, registered = self.master, self.registered
        self.master, self.registered = None, False
        if registered and master is not None:
            master.send(m.WorkerStopping(self.id, reason))
            master.close()
            await master.wait_closed(1.0)
