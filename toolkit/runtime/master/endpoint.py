"""The master endpoint: it owns the tables (workers here; drivers and applications in its
``work``), lists every handler, and keeps worker membership and liveness itself. One synchronous
handler per message, on one inbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from toolkit.errors import WireError
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.config import MasterConfig
from toolkit.runtime.endpoint import Endpoint, Handler, Limits
from toolkit.runtime.master import recovery, scopes
from toolkit.runtime.master.modes import store_for
from toolkit.runtime.master.store import NoStore
from toolkit.runtime.master.work import Work
from toolkit.runtime.master.workers import Workers
from toolkit.runtime.records import WorkerInfo
from toolkit.runtime.states import ApplicationState, DriverState, MasterState, WorkerState
from toolkit.runtime.wire import Connection

logger = logging.getLogger("toolkit.runtime.master")

STANDBY_POLL = 0.2
"""Seconds between a standby's tries at the recovery directory's lock."""
TELL_AT_ONCE = 64
"""A new leader tells this many stored workers at once that it leads."""
TELL_TIMEOUT = 2.0
REAPER_ITERATIONS = 15
"""A DEAD worker stays listed for (REAPER_ITERATIONS + 1) x worker timeout, as in Spark."""


class Master(Endpoint):
    role = "master"
    accepts = wire.TO_MASTER
    takes_jobs = True

    def __init__(self, config: MasterConfig, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.store = store_for(config.recovery_mode, config.recovery_dir,
                               config.zookeeper_url, config.zookeeper_dir)
        # with a recovery mode, a master leads only once it holds the store: until then it
        # is a standby, which turns workers and clients away
        self.state = MasterState.ALIVE if isinstance(self.store, NoStore) else (
            MasterState.STANDBY)
        self.port = config.port
        self.webui_port = config.webui_port
        self.start_time = clock()
        self.workers = Workers(self.store)
        """Every listed worker by id (DEAD ones until culled), the live ones by address and
        by connection."""
        self.work = Work(config, self.workers, clock, lambda: self.url, lambda: self.state,
                         self.store)
        """Drivers, applications and executors: their tables and their handlers."""
        self._next_check: asyncio.TimerHandle | None = None
        self._asked_in: set[Connection] = set()
        self._said_standby = False
        """Links already asked to re-register (ReconnectWorker): once each."""
        self._turned_away: set[Connection] = set()
        """Workers' links a standby turned away: told at once when it comes to lead."""
        self._probing = False
        self._next_try: asyncio.TimerHandle | None = None
        self._rest: Any = None
        # last: the endpoint reads the handler table, which names the tables' handlers
        super().__init__(config.keys, Limits.sized(
            config.max_connections, config.max_handshakes, config.max_handshakes_per_host))

    @property
    def url(self) -> str:
        return f"ember://{self.config.host}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"{self.keys.scheme}://{self.config.host}:{self.webui_port}"

    def live_worker(self, worker_id: str) -> WorkerInfo | None:
        return self.workers.live(worker_id)

    def readiness(self) -> tuple[bool, str]:
        """Ready when it leads and has recovered: ALIVE (the REST API's /readyz and every REST
        action: a standby or a recovering master answers 503)."""
        return self.state == MasterState.ALIVE, f"master is {self.state.value}"

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.start_consumer()
        self.port = await self.listen(self.config.host, self.config.port)
        logger.info("Starting master at %s (worker timeout %g s)", self.url,
                    self.config.worker_timeout)
        logger.info("Accepting up to %d connections, %d handshakes at once, %d from one "
                    "address", self.limits.connections, self.limits.handshakes,
                    self.limits.handshakes_per_host)
        self.every(self.config.heartbeat_interval, m.CheckForWorkerTimeOut)
        if self.state == MasterState.STANDBY:
            loop = asyncio.get_running_loop()
            self.store.on_lost = lambda why: loop.call_soon_threadsafe(
                self._lost_leadership, why)
            if hasattr(self.store, "identity"):
                self.store.identity = f"{self.config.host}:{self.port}"
            self.post(m.TryToLead())
        if self.config.rest_port is not None:
            from toolkit.runtime import rest

            self._rest = await rest.start_server(self, self.config.host, self.config.rest_port,
                                                 self.keys, self.limits.http_connections,
                                                 lambda: self.keys.web, lambda: self.keys)

    async def shutdown(self, reason: str) -> None:
        if self._rest is not None:
            await self._rest.cleanup()
        close = getattr(self.store, "close", None)
        if close is not None:  # a leader's lock goes now, not when its session expires
            await asyncio.to_thread(close)
        links = [w.conn for w in self.workers.living() if w.conn is not None]
        for conn in links:
            conn.close()
        await asyncio.gather(*(conn.wait_closed(1.0) for conn in links))

    # Handlers ----------------------------------------------------------------------------

    def handle(self, message: m.Message, conn: Connection | None = None) -> None:
        """A job's connection (it proved a scope) gets only what scopes.py allows it."""
        scope = conn.proven.scope if conn is not None else None
        if scope is not None and conn is not None:
            admitted = scopes.admit(self.work, message, scope)
            if isinstance(admitted, str):
                scopes.refuse(message, conn, admitted)
                return
            message = admitted
        super().handle(message, conn)

    def handlers(self) -> dict[type[m.Message], Handler]:
        return {
            m.RegisterWorker: self.on_register_worker,
            m.Heartbeat: self.on_heartbeat,
            m.WorkerStopping: self.on_worker_stopping,
            m.ConnectionClosed: self.on_connection_closed,
            m.CheckForWorkerTimeOut: self.on_check_for_worker_time_out,
            m.TryToLead: self.on_try_to_lead,
            m.CompleteRecovery: self.on_complete_recovery,
            m.CheckApplication: self.on_check_application,
            **self.work.handlers(),
            m.WorkerLatestState: self.on_worker_latest_state,
            m.ReconnectApplication: self.on_reconnect_application,
            m.RequestLeadership: self.on_request_leadership,
            m.RequestKillApplication: self.on_request_kill_application,
        }

    # Leadership and recovery (a recovery mode) ---------------------------------------------

    def on_try_to_lead(self, msg: m.TryToLead, conn: Connection | None) -> None:
        if self.state != MasterState.STANDBY or not hasattr(self.store, "try_lead"):
            return
        if not self.store.try_lead():
            if not self._said_standby:
                logger.info("Another master leads on %s; standing by", self.store.directory)
                self._said_standby = True
            self._probe_leader()
            self._next_try = self.after(STANDBY_POLL, m.TryToLead())
            return
        logger.info("Leading: recovering from %s", self.store.directory)
        self.state = MasterState.RECOVERING
        self.stats.count("leaderships")
        for link in self._turned_away:  # they need not wait for their next try
            link.send(m.ReconnectWorker(self.url))
        self._turned_away.clear()
        found = self.store.read()
        recovery.restore(self.workers, self.work, found, self.clock(), self.monotonic())
        self.spawn(self._tell_workers([(w.host, w.port) for w in found.workers]),
                   name="master changed")
        logger.info("Recovered %d workers, %d drivers (%d waiting) and %d completed drivers, "
                    "%d applications", len(found.workers), len(found.drivers),
                    sum(d.state == DriverState.SUBMITTED for d in found.drivers),
                    len(found.completed), len(found.apps))
        if not self._settle_recovery():
            self.after(self.config.worker_timeout, m.CompleteRecovery())

    async def _tell_workers(self, addresses: list[tuple[str, int]]) -> None:
        """Spark's MasterChanged: each stored worker hears that this master leads, over a
        connection of the master's own, so that one still held by a frozen or cut-off leader
        (no reset ever comes) does not keep it away. A few at a time."""
        gate = asyncio.Semaphore(TELL_AT_ONCE)

        async def tell(host: str, port: int) -> None:
            async with gate:
                try:
                    conn = await wire.connect(host, port, self.keys, wire.TO_MASTER,
                                              timeout=TELL_TIMEOUT)
                except (OSError, WireError):
                    return  # not there: it comes back by itself, or is lost at the timeout
                conn.send(m.ReconnectWorker(self.url))
                conn.close()
                await conn.wait_closed(TELL_TIMEOUT)

        await asyncio.gather(*(tell(host, port) for host, port in addresses))

    def _lost_leadership(self, why: str) -> None:
        """This leader no longer knows that it leads (ZooKeeper suspended or lost its session,
        or its lock is gone): another may lead now. Exit non-zero, so that the supervisor
        starts this master again, as a standby."""
        logger.error("No longer the leader: %s (%s); exiting 1 so as to come back as a "
                     "standby", why, self.store.directory)
        self.stop(1)

    def _probe_leader(self) -> None:
        """ZooKeeper frees a dead leader's lock only when its session expires, seconds later.
        A leader whose address refuses connections has no process left there: take its lock
        now. A leader that is slow, frozen or cut off is left to its session. Either way, a
        deposed leader that still runs can record nothing more (fenced writes) and exits."""
        leader = getattr(self.store, "leader", None)
        if leader is None or self._probing:
            return
        found = leader()
        if found is None:
            return
        self._probing = True
        self.spawn(self._probe(*found), name="probe-leader")

    async def _probe(self, node: str, identity: str) -> None:
        host, _, port = identity.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
            writer.close()
        except ConnectionRefusedError:
            if self.state == MasterState.STANDBY and self.store.depose(node, identity):
                logger.warning("The leader at %s refuses connections: its process is gone; "
                               "taking its lock without waiting for its session to expire",
                               identity)
                if self._next_try is not None:
                    self._next_try.cancel()  # one chain of tries: this one, now
                self.post(m.TryToLead())
        except (TimeoutError, OSError, ValueError):
            pass  # not known to be dead: its session decides
        finally:
            self._probing = False

    def on_worker_latest_state(self, msg: m.WorkerLatestState, conn: Connection | None) -> None:
        self.work.on_worker_latest_state(msg, conn)
        if self.state == MasterState.RECOVERING:
            self._settle_recovery()

    def on_reconnect_application(self, msg: m.ReconnectApplication,
                                 conn: Connection | None) -> None:
        self.work.on_reconnect_application(msg, conn)
        if self.state == MasterState.RECOVERING:
            self._settle_recovery()

    def on_request_kill_application(self, msg: m.RequestKillApplication,
                                    conn: Connection | None) -> None:
        """The web UI kills an application: its executors are killed, its program told."""
        app = self.work.apps.get(msg.app_id)
        if self.state != MasterState.ALIVE or app is None:
            why = (f"this master is {self.state.value}" if self.state != MasterState.ALIVE
                   else f"application {msg.app_id} is not running")
            answer = m.KillApplicationResponse(msg.app_id, False, why, msg.request_id)
        else:
            logger.info("Killing application %s (asked from the web UI)", app.id)
            self.work.end_app(app, ApplicationState.KILLED, "killed from the web UI")
            self.work.schedule()
            answer = m.KillApplicationResponse(msg.app_id, True, f"{app.id} killed",
                                               msg.request_id)
        if conn is not None:
            conn.send(answer)

    def on_request_leadership(self, msg: m.RequestLeadership, conn: Connection | None) -> None:
        """A client checks that this master answers: a standby says NotLeader."""
        if conn is not None:
            conn.send(m.NotLeader(self.url, self.state.value, in_reply_to=msg.request_id)
                      if self.state == MasterState.STANDBY else
                      m.LeadershipResponse(self.url, self.state.value,
                                           in_reply_to=msg.request_id))

    def on_check_application(self, msg: m.CheckApplication, conn: Connection | None) -> None:
        app = self.work.apps.get(msg.app_id)
        if app is not None and app.state == ApplicationState.UNKNOWN and (
                self.state == MasterState.ALIVE):
            self.work.end_app(app, ApplicationState.FAILED,
                              f"its driver program did not come back within "
                              f"{self.config.worker_timeout:g} s of its link's reset")
            self.work.schedule()

    def on_complete_recovery(self, msg: m.CompleteRecovery, conn: Connection | None) -> None:
        if self.state == MasterState.RECOVERING:
            self._complete_recovery()

    def _settle_recovery(self) -> bool:
        """Recovery is complete once no stored worker or application is UNKNOWN; True if it
        is."""
        if any(w.state == WorkerState.UNKNOWN for w in self.workers.living()) or (
                self.work.unknown_apps()):
            return False
        self._complete_recovery()
        return True

    def _complete_recovery(self) -> None:
        """The workers that did not come back are lost (their drivers relaunched when
        supervised, else ERROR, as when any worker is lost); then ALIVE."""
        self.state = MasterState.COMPLETING_RECOVERY
        for worker in self.workers.living():
            if worker.state == WorkerState.UNKNOWN:
                self._remove(worker, "did not come back to the recovering master")
        recovery.settle(self.workers, self.work)
        self.state = MasterState.ALIVE
        logger.info("Recovery complete: %d workers, %d drivers; now ALIVE",
                    len(self.workers.living()), len(self.work.drivers))
        self.work.schedule()

    def on_register_worker(self, msg: m.RegisterWorker, conn: Connection | None) -> None:
        logger.info("Registering worker %s with %d cores, %d MiB RAM", msg.id, msg.cores,
                    msg.memory)
        if conn is None:
            return
        if not scopes.certified(conn, msg.host, self.keys.tls is not None):
            logger.warning("Refusing to register worker %s: the certificate of %s is not for "
                           "host %s", msg.id, conn.peer, msg.host)
            conn.send(m.RegisterWorkerFailed(f"this connection's certificate is not for host "
                                             f"{msg.host}"))
            return
        if self.state == MasterState.STANDBY:
            conn.send(m.MasterInStandby())
            self._turned_away.add(conn)
            return
        known = self.live_worker(msg.id)
        if known is not None:  # schedule() waits for its WorkerLatestState
            self._reattach(known, conn)
            conn.send(self._registered(known, duplicate=True))
            return
        worker = WorkerInfo(msg.id, msg.host, msg.port, msg.cores, msg.memory, msg.webui_url,
                            conn, last_heartbeat=self.clock(), last_seen=self.monotonic())
        if self._register(worker):
            self.stats.count("registrations")
            conn.send(self._registered(worker, duplicate=False))
            self.work.schedule()
        else:
            logger.warning("Worker registration failed: attempted to re-register worker at same "
                           "address %s", worker.address)
            conn.send(m.RegisterWorkerFailed(
                f"Attempted to re-register worker at same address: {worker.address}"))

    def on_heartbeat(self, msg: m.Heartbeat, conn: Connection | None) -> None:
        self.stats.count("heartbeats")
        worker = self.live_worker(msg.worker_id)
        if worker is not None:
            self._seen(worker)
            return
        # Spark ignores a worker it has already culled from its list, which then never comes
        # back. Ember's connections are authenticated, so any unknown worker is asked in.
        known = "unregistered" if msg.worker_id in self.workers else "unknown"
        if conn is None or conn in self._asked_in:
            return  # asked once on this link: heartbeats queued in a partition ask no more
        self._asked_in.add(conn)
        logger.warning("Got heartbeat from %s worker %s; asking it to re-register", known,
                       msg.worker_id)
        if conn is not None:
            conn.send(m.ReconnectWorker(self.url))

    def on_worker_stopping(self, msg: m.WorkerStopping, conn: Connection | None) -> None:
        worker = self.live_worker(msg.worker_id)
        if worker is not None:
            self._remove(worker, msg.reason)

    def on_connection_closed(self, msg: m.ConnectionClosed, conn: Connection | None) -> None:
        worker = self.workers.on(conn)
        if worker is not None and not msg.reset:  # its process closed it, or ended
            self._remove(worker, f"{worker.address} got disassociated ({msg.reason})")
        elif worker is not None:
            # a reset on the way is a blip, not a lost worker: its work is kept, as it was, if
            # it registers again before its heartbeats time out
            self.workers.detach(worker)
            logger.warning("Link to worker %s was reset (%s); keeping its work until it "
                           "registers again or %g s pass without a heartbeat", worker.id,
                           msg.reason, self.config.worker_timeout)
        if conn is not None:
            self._asked_in.discard(conn)
            self._turned_away.discard(conn)
            for app in self.work.forget_client(conn, msg.reset):
                self.after(self.config.worker_timeout, m.CheckApplication(app.id))

    def on_check_for_worker_time_out(self, msg: m.CheckForWorkerTimeOut,
                                     conn: Connection | None) -> None:
        now = self.monotonic()
        timeout = self.config.worker_timeout
        for worker in list(self.workers.values()):
            if worker.last_seen >= now - timeout:
                continue
            if worker.state != WorkerState.DEAD:
                logger.warning("Removing %s because we got no heartbeat in %g seconds",
                               worker.id, timeout)
                link = worker.conn
                self._remove(worker, f"Not receiving heartbeat for {timeout:g} seconds")
                if link is not None:
                    # what it was sent and never got (a LaunchDriver into a partition) must
                    # never arrive once the link heals: dropped, and the worker registers anew
                    link.abort()
            elif worker.last_seen < now - (REAPER_ITERATIONS + 1) * timeout:
                self.workers.cull(worker)
        self._schedule_next_check(now)


    # Helpers -----------------------------------------------------------------------------

    def _registered(self, worker: WorkerInfo, duplicate: bool) -> m.RegisteredWorker:
        return m.RegisteredWorker(self.url, self.webui_url, duplicate,
                                  self.config.heartbeat_interval, worker.epoch)

    def _register(self, worker: WorkerInfo) -> bool:
        self.workers.drop_dead_at(worker.address)
        old_live = self.workers.live_at(worker.address)
        if old_live is not None:
            # a new id where a worker that lost its link (or that a recovering master does
            # not know yet) was: its supervisor restarted it, and the old one's work is gone
            if old_live.state != WorkerState.UNKNOWN and old_live.conn is not None:
                return False
            self._remove(old_live, f"replaced by worker {worker.id} at the same address")
        self.workers.add(worker)
        logger.info("Worker %s at %s is ALIVE", worker.id, worker.address)
        return True

    def _reattach(self, worker: WorkerInfo, conn: Connection) -> None:
        """A known worker registers again (reconnect, recovery): keep it, take the new link."""
        logger.info("Worker %s re-registered", worker.id)
        self._asked_in.discard(conn)
        old = self.workers.reattach(worker, conn)
        if old is not None:
            old.close()
        self._seen(worker)

    def _schedule_next_check(self, now: float) -> None:
        """Check again when the earliest heartbeat expires, not only on the next tick.

        The periodic tick bounds detection at timeout + one interval; this makes it about the
        timeout itself. One pending timer at most; it only posts a message.
        """
        due = [w.last_seen + self.config.worker_timeout for w in self.workers.living()]
        if not due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # handlers driven directly (unit tests): the tick suffices
            return
        if self._next_check is not None:
            self._next_check.cancel()
        delay = min(max(min(due) - now, 0.0) + 0.001, self.config.heartbeat_interval)
        self._next_check = loop.call_later(delay, self.post, m.CheckForWorkerTimeOut())

    def _seen(self, worker: WorkerInfo) -> None:
        worker.last_heartbeat = self.clock()
        worker.last_seen = self.monotonic()

    def _remove(self, worker: WorkerInfo, reason: str) -> None:
        logger.info("Removing worker %s on %s: %s", worker.id, worker.address, reason)
        self.workers.remove(worker, reason)
        self.work.lose_work(worker)
        self.work.schedule()
