"""The Worker: registers with the master(s), heartbeats, re-registers when the link is lost;
launches drivers and executors when told and reports every state change until acknowledged."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from toolkit.errors import ConfigError, WireError
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.config import parse_master_url
from toolkit.runtime.endpoint import Endpoint, Handler
from toolkit.runtime.jobs import JobEnv
from toolkit.runtime.keys import Keys
from toolkit.runtime.registration import comes_from, registration_delay, worker_id
from toolkit.runtime.runners import KILL_TIMEOUT, DriverRunner, ExecutorRunner, State
from toolkit.runtime.states import DriverState, ExecutorState, is_finished
from toolkit.runtime.wire import Connection
from toolkit.runtime.workdir import CLEANUP_INTERVAL, CLEANUP_TTL, EMBER_ID, clean_work_dir
from toolkit.settings import default_of

logger = logging.getLogger(__name__)

STANDBY_RETRY = 1.0
"""Seconds before asking a standby master again."""
REFUSED_RETRY = 2.0
RETAINED_FINISHED = 1000
"""Finished executors listed in the worker's /json (Spark's retainedExecutors)."""
SHUTDOWN_KILL_WAIT = 3.0


@dataclass(frozen=True)
class WorkerConfig:
    masters: tuple[tuple[str, int], ...]
    host: str
    cores: int
    memory: int
    work_dir: Path
    port: int = default_of("worker", "port")
    webui_port: int = default_of("worker", "webui_port")
    register_timeout: float = default_of("worker", "register_timeout")
    keys: Keys = field(default_factory=Keys, repr=False)
    cleanup_interval: float = CLEANUP_INTERVAL
    """0 turns work dir cleanup off."""
    cleanup_ttl: float = CLEANUP_TTL
    kill_timeout: float = KILL_TIMEOUT

    @property
    def master_url(self) -> str:
        return "ember://" + ",".join(f"{h}:{p}" for h, p in self.masters)


class Worker(Endpoint):
    accepts = wire.TO_WORKER
    role = "worker"

    def __init__(self, config: WorkerConfig, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config.keys)
        self.config = config
        self._jobs = JobEnv(config.work_dir, config.master_url, config.keys)
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
        self._unregistered_since = monotonic()
        self._links: dict[str, asyncio.Task[Any]] = {}
        self._link_conns: dict[str, Connection] = {}
        self._heartbeat: asyncio.Task[Any] | None = None
        self.drivers: dict[str, DriverRunner] = {}
        self.executors: dict[tuple[str, int], ExecutorRunner] = {}
        self.finished_executors: collections.deque[ExecutorRunner] = collections.deque(
            maxlen=RETAINED_FINISHED)
        self._outbox: dict[int, m.DriverStateChanged | m.ExecutorStateChanged] = {}
        """State changes the master has not acknowledged yet, by sequence number."""
        self._seq = 0
        self.stopping = False

    @property
    def cores_used(self) -> int:
        return (sum(r.desc.cores for r in self.drivers.values())
                + sum(r.cores for r in self.executors.values()))

    @property
    def memory_used(self) -> int:
        return (sum(r.desc.memory for r in self.drivers.values())
                + sum(r.memory for r in self.executors.values()))

    @property
    def webui_url(self) -> str:
        return f"{self.keys.scheme}://{self.config.host}:{self.webui_port}"

    def _register_message(self, master_address: str) -> m.RegisterWorker:
        return m.RegisterWorker(self.id, self.config.host, self.port, self.config.cores,
                                self.config.memory, self.webui_url, master_address)

    def is_ready(self) -> bool:
        return self.registered

    # Handlers ----------------------------------------------------------------------------

    def handlers(self) -> dict[type[m.Message], Handler]:
        return {
            m.MasterConnected: self.on_master_connected,
            m.RegisteredWorker: self.on_registered_worker,
            m.RegisterWorkerFailed: self.on_register_worker_failed,
            m.MasterInStandby: self.on_master_in_standby,
            m.ReconnectWorker: self.on_reconnect_worker,
            m.SendHeartbeat: self.on_send_heartbeat,
            m.CheckRegistration: self.on_check_registration,
            m.ConnectionClosed: self.on_connection_closed,
            m.LaunchDriver: self.on_launch_driver,
            m.KillDriver: self.on_kill_driver,
            m.DriverStateChanged: self.on_driver_state_changed,
            m.LaunchExecutor: self.on_launch_executor,
            m.KillExecutor: self.on_kill_executor,
            m.ExecutorStateChanged: self.on_executor_state_changed,
            m.ApplicationFinished: self.on_application_finished,
            m.StateChangeAcked: self.on_state_change_acked,
            m.CleanupWorkDir: self.on_cleanup_work_dir,
        }

    def on_master_connected(self, msg: m.MasterConnected, conn: Connection | None) -> None:
        if conn is None or conn.closed:
            return
        if self.registered:  # a link to another master is not needed; this one's is kept
            if conn is not self.master:
                conn.close()
            return
        self._link_conns[msg.address] = conn
        conn.send(self._register_message(msg.address))

    def on_registered_worker(self, msg: m.RegisteredWorker, conn: Connection | None) -> None:
        if not self._on_own_link(conn, msg):
            return
        assert conn is not None
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
        for change in self._outbox.values():
            conn.send(change)
        conn.send(m.WorkerLatestState(
            self.id, [m.ExecutorRef(a, e) for a, e in self.executors], list(self.drivers),
            msg.registration))
        self.announce_if_ready()

    def on_register_worker_failed(self, msg: m.RegisterWorkerFailed,
                                  conn: Connection | None) -> None:
        """Refused (say, the master still lists a crashed predecessor at this address).

        Spark exits here, and a supervisor soon gives up restarting it. The master drops the
        predecessor within its timeout, so Ember asks again until --register-timeout.
        """
        if self.registered or not self._on_own_link(conn, msg):
            return
        assert conn is not None
        logger.warning("Master refused this worker: %s; asking again in %g s", msg.message,
                       REFUSED_RETRY)
        address = next((a for a, c in self._link_conns.items() if c is conn), conn.peer)
        self.after(REFUSED_RETRY, m.MasterConnected(address), conn)

    def on_master_in_standby(self, msg: m.MasterInStandby, conn: Connection | None) -> None:
        """A standby turned it away: ask it again in a while (it may come to lead), while the
        other masters' links go on."""
        if self.registered or not self._on_own_link(conn, msg) or conn is None or conn.closed:
            return
        logger.info("Master at %s is in standby; asking again in %g s", conn.peer,
                    STANDBY_RETRY)
        address = next((a for a, c in self._link_conns.items() if c is conn), conn.peer)
        self.after(STANDBY_RETRY, m.MasterConnected(address), conn)

    def on_reconnect_worker(self, msg: m.ReconnectWorker, conn: Connection | None) -> None:
        if conn is not None and conn is not self.master and (
                conn not in self._link_conns.values()):
            self._master_changed(msg.master_url, conn)
            return
        logger.info("Master %s asked this worker to reconnect; re-registering", msg.master_url)
        self._lose_registration()
        if conn is not None and not conn.closed:
            address = next((a for a, c in self._link_conns.items() if c is conn), conn.peer)
            conn.send(self._register_message(address))
        else:
            self._ensure_links()

    def _master_changed(self, master_url: str, conn: Connection) -> None:
        """Spark's MasterChanged: a master that came to lead says so over a connection of its
        own. If it is one of this worker's masters and not the one it is registered with,
        that one (frozen, or cut off with the link still up) is dropped for the new leader."""
        conn.close()
        try:
            host, port = parse_master_url(master_url)[0]
        except (ConfigError, IndexError):
            return
        if (host, port) not in self.config.masters or not comes_from(conn.peer, host) or (
                self.keys.tls is not None and host not in conn.proven.hosts):
            logger.warning("Ignoring %s, said from %s to lead: not one of this worker's "
                           "masters", master_url, conn.peer)
            return
        if self.master is not None and self.master_url == master_url:
            return  # registered with it already
        logger.info("Master %s leads now; registering with it", master_url)
        old, self.master = self.master, None
        self._lose_registration()
        if old is not None:
            old.abort()
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

    # Drivers and executors ---------------------------------------------------------------

    def on_launch_driver(self, msg: m.LaunchDriver, conn: Connection | None) -> None:
        if not self._from_master(conn, msg):
            return
        if msg.driver_id in self.drivers:
            logger.warning("Driver %s is already running here", msg.driver_id)
            return
        logger.info("Asked to launch driver %s", msg.driver_id)
        env = lambda: self._jobs.driver_env(msg.driver_id, msg.desc.env, {  # noqa: E731
            "EMBER_DRIVER_ID": msg.driver_id,
            "EMBER_DRIVER_HOST": self.config.host,
            "EMBER_DRIVER_CORES": str(msg.desc.cores),
            "EMBER_DRIVER_MEMORY": f"{msg.desc.memory}m",
        })

        asked = time.monotonic()

        def report(state: State, message: str, code: int | None) -> None:
            assert isinstance(state, DriverState)
            if state == DriverState.RUNNING:
                self.stats.observe("launches", time.monotonic() - asked, "driver")
            self.post(m.DriverStateChanged(0, msg.driver_id, state, message, code))

        runner = DriverRunner(msg.driver_id, msg.desc, self.config.work_dir, env, report,
                              self.config.kill_timeout)
        self.drivers[msg.driver_id] = runner
        runner.start()

    def on_kill_driver(self, msg: m.KillDriver, conn: Connection | None) -> None:
        if not self._from_master(conn, msg):
            return
        runner = self.drivers.get(msg.driver_id)
        if runner is None:
            logger.warning("Asked to kill unknown driver %s", msg.driver_id)
            return
        logger.info("Asked to kill driver %s", msg.driver_id)
        runner.kill()

    def on_driver_state_changed(self, msg: m.DriverStateChanged,
                                conn: Connection | None) -> None:
        """A runner's report: numbered and sent on to the master, as it is."""
        runner = self.drivers.get(msg.driver_id)
        if runner is None:
            return
        if is_finished(msg.state):
            del self.drivers[msg.driver_id]
            self._jobs.ended(msg.driver_id)
            logger.info("Driver %s is %s%s", msg.driver_id, msg.state,
                        f" ({msg.message})" if msg.message else "")
        self._report(lambda seq: msgspec.structs.replace(msg, seq=seq))

    def on_launch_executor(self, msg: m.LaunchExecutor, conn: Connection | None) -> None:
        if not self._from_master(conn, msg):
            return
        key = (msg.app_id, msg.exec_id)
        if key in self.executors:
            logger.warning("Executor %s/%d is already running here", *key)
            return
        logger.info("Asked to launch executor %s/%d for %s", msg.app_id, msg.exec_id,
                    msg.desc.name)
        values = {"EXECUTOR_ID": str(msg.exec_id), "APP_ID": msg.app_id,
                  "CORES": str(msg.cores), "HOSTNAME": self.config.host,
                  "WORKER_URL": f"ember://{self.config.host}:{self.port}"}
        env = lambda: self._jobs.env(msg.desc.env, {  # noqa: E731
            "EMBER_EXECUTOR_ID": values["EXECUTOR_ID"],
            "EMBER_APP_ID": values["APP_ID"],
            "EMBER_EXECUTOR_CORES": values["CORES"],
            "EMBER_EXECUTOR_MEMORY": f"{msg.memory}m",
            "EMBER_HOSTNAME": values["HOSTNAME"],
            "EMBER_WORKER_URL": values["WORKER_URL"],
        })

        asked = time.monotonic()

        def report(state: State, message: str, code: int | None) -> None:
            assert isinstance(state, ExecutorState)
            if state == ExecutorState.RUNNING:
                self.stats.observe("launches", time.monotonic() - asked, "executor")
            self.post(m.ExecutorStateChanged(0, msg.app_id, msg.exec_id, state, message, code))

        runner = ExecutorRunner(msg.app_id, msg.exec_id, msg.desc, msg.cores, msg.memory,
                                self.config.work_dir, env, values, report,
                                self.config.kill_timeout)
        self.executors[key] = runner
        runner.start()

    def on_kill_executor(self, msg: m.KillExecutor, conn: Connection | None) -> None:
        if not self._from_master(conn, msg):
            return
        runner = self.executors.get((msg.app_id, msg.exec_id))
        if runner is None:
            logger.info("Asked to kill unknown executor %s/%d", msg.app_id, msg.exec_id)
            return
        logger.info("Asked to kill executor %s/%d", msg.app_id, msg.exec_id)
        runner.kill()

    def on_executor_state_changed(self, msg: m.ExecutorStateChanged,
                                  conn: Connection | None) -> None:
        """A runner's report: numbered and sent on to the master, as it is."""
        runner = self.executors.get((msg.app_id, msg.exec_id))
        if runner is None:
            return
        if is_finished(msg.state):
            del self.executors[(msg.app_id, msg.exec_id)]
            self.finished_executors.append(runner)
            logger.info("Executor %s/%d finished with state %s%s", msg.app_id, msg.exec_id,
                        msg.state, f" ({msg.message})" if msg.message else "")
        self._report(lambda seq: msgspec.structs.replace(msg, seq=seq))

    def on_application_finished(self, msg: m.ApplicationFinished,
                                conn: Connection | None) -> None:
        if not self._from_master(conn, msg):
            return
        for (app_id, _), runner in list(self.executors.items()):
            if app_id == msg.app_id:
                runner.kill()

    def on_state_change_acked(self, msg: m.StateChangeAcked, conn: Connection | None) -> None:
        if self._from_master(conn, msg):
            self._outbox.pop(msg.seq, None)

    def on_cleanup_work_dir(self, msg: m.CleanupWorkDir, conn: Connection | None) -> None:
        active = set(self.drivers) | {app_id for app_id, _ in self.executors}
        self.spawn(asyncio.to_thread(clean_work_dir, self.config.work_dir, active,
                                     self.config.cleanup_ttl, self.clock()),
                   name="work dir cleanup")

    def _report(self, make: Callable[[int], m.DriverStateChanged | m.ExecutorStateChanged]
                ) -> None:
        """Send a state change to the master now if registered, and keep it until acked;
        every registration resends what is still unacknowledged."""
        self._seq += 1
        change = make(self._seq)
        self._outbox[self._seq] = change
        if self.registered and self.master is not None:
            self.master.send(change)

    def _on_own_link(self, conn: Connection | None, msg: m.Message) -> bool:
        """Registration answers come only on links this worker opened, never on others'."""
        if conn is not None and conn in self._link_conns.values():
            return True
        logger.warning("Ignoring %s from %s: not a link this worker opened to its masters",
                       type(msg).__name__, conn.peer if conn else "?")
        return False

    def _from_master(self, conn: Connection | None, msg: m.Message) -> bool:
        if conn is None or conn is not self.master:
            logger.warning("Ignoring %s from %s: not the master this worker is registered "
                           "with", type(msg).__name__, conn.peer if conn else "?")
            return False
        if isinstance(msg, m.LaunchDriver | m.LaunchExecutor):
            if self.stopping:
                logger.warning("Not launching: this worker is shutting down")
                return False
            work_id = msg.driver_id if isinstance(msg, m.LaunchDriver) else msg.app_id
            if not EMBER_ID.fullmatch(work_id):
                logger.warning("Refusing %s with a malformed id %r", type(msg).__name__, work_id)
                return False
        return True

    def reload_keys(self, keys: Keys) -> int:
        self._jobs.reload(keys, list(self.drivers))
        return super().reload_keys(keys)

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
                conn = await wire.connect(host, port, self.keys, wire.TO_WORKER)
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
        if self.config.cleanup_interval > 0:
            self.every(self.config.cleanup_interval, m.CleanupWorkDir)
        self._ensure_links()

    async def shutdown(self, reason: str) -> None:
        self.stopping = True
        runners = [*self.drivers.values(), *self.executors.values()]
        if runners:
            logger.info("Killing %d drivers and executors", len(runners))
            await asyncio.gather(*(r.stop(SHUTDOWN_KILL_WAIT) for r in runners))
        master, registered = self.master, self.registered
        self.master, self.registered = None, False
        if registered and master is not None:
            master.send(m.WorkerStopping(self.id, reason))
            master.close()
            await master.wait_closed(1.0)
