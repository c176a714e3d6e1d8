"""Endpoint: one inbox, one consumer, synchronous handlers.

Connection readers only decode frames (with the decoder of what this role accepts) and post
``(message, connection)`` to the inbox; the single consumer calls the handler that the
endpoint's table (``handlers``) names for the message's type. Handlers never await, so state
changes cannot interleave and no locks exist. Timers only post messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from toolkit.base.notify import sd_notify
from toolkit.errors import ConfigError, FatalError, NotLeaderError, WireError
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.admission import Admission, source_of
from toolkit.runtime.keys import Keys, as_keys, key_id
from toolkit.runtime.stats import Stats

logger = logging.getLogger(__name__)

FILES_RESERVE = 64
"""Open files kept back from connections: logs, the web UI's sockets, pid files, children."""
MOST_FILES = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What peers may hold of one process: connections, handshakes in progress, and those
    from one address. Past a limit a new connection is closed at once, and logged."""

    connections: int = 1024
    handshakes: int = 256
    handshakes_per_host: int = 16
    http_connections: int = 256
    """Each HTTP port's (web UI, REST): kept apart from the RPC port's, so that holding one
    never starves the other of file descriptors."""

    @classmethod
    def sized(cls, connections: int | None = None, handshakes: int | None = None,
              handshakes_per_host: int = 16) -> Limits:
        """Sized from the process's open-file limit (raised to its hard limit first), unless
        given: a limit protects the process and never caps the cluster below what it can
        hold. The HTTP ports get an eighth of the files each, at most 256, before the RPC
        port gets the rest."""
        files = raise_open_files()
        http = max(16, min(256, files // 8))
        handshakes = handshakes or max(256, (files - FILES_RESERVE) // 4)
        connections = connections or max(64, files - FILES_RESERVE - 2 * http)
        return cls(connections, handshakes, handshakes_per_host, http)


def raise_open_files() -> int:
    """Raise this process's soft open-file limit to its hard one (at most MOST_FILES), as the
    JVM does for Spark's master; the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_FILES if hard == resource.RLIM_INFINITY else min(hard, MOST_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
        except (ValueError, OSError):
            return soft
    return MOST_FILES if soft == resource.RLIM_INFINITY else soft

Handler = Callable[[Any, "wire.Connection | None"], None]
T = TypeVar("T", bound=m.Message)
ASK_TIMEOUT = 10.0


class LocalReply:
    """Where the handler of a request asked from inside this process (the REST server) sends
    its answer: a future, not a socket. It stands in for the connection: the handlers call
    only ``send``, ``close``, ``closed`` and ``peer``."""

    peer = "this process"
    proven = wire.PLAIN
    """REST's requests come from the operator (its token is the cluster secret's)."""

    def __init__(self) -> None:
        self.closed = False
        self.answer: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()

    def send(self, message: m.Message) -> bool:
        if self.answer.done():
            return False
        self.answer.set_result(message)
        return True

    def close(self) -> None:
        self.closed = True
        if not self.answer.done():
            self.answer.set_exception(ConnectionError("the request was refused"))


class _TlsFirst(asyncio.StreamReaderProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()  # start_tls resumes it under TLS
        super().connection_made(transport)


class Endpoint:
    """Base of Master and Worker: inbox, dispatch, timers, listening socket."""

    role = "endpoint"
    webui_port = 0
    accepts: wire.Inbound  # what inbound connections may send
    config: Any  # the role's config (MasterConfig, WorkerConfig): its host, ports, limits
    takes_jobs = False
    """Whether a job's scoped credential may connect (the master's does; a worker takes
    orders from its master only)."""
    def __init__(self, keys: Keys | bytes | None, limits: Limits | None = None) -> None:
        self.keys = as_keys(keys)
        self.limits = limits or Limits()
        self.exit_code = 0
        self._inbox: asyncio.Queue[tuple[m.Message, wire.Connection | None]] = asyncio.Queue()
        self._handlers: dict[type[m.Message], Handler] = self.handlers()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._admission = Admission(self.limits.handshakes, self.limits.handshakes_per_host)
        self._connections = 0
        self._live: set[wire.Connection] = set()
        self.stats = Stats()
        """Counters and latencies for /metrics (metrics.py)."""
        self._stopped: asyncio.Event | None = None
        self.serving = False
        self._announced_ready = False

    @property
    def open_connections(self) -> int:
        return len(self._live)

    @property
    def secret(self) -> bytes | None:
        return self.keys.secret

    def reload_keys(self, keys: Keys) -> int:
        """Take new keys (a rotation, a renewed certificate): new connections use them, and
        connections that proved a key or a CA no longer accepted are dropped (their peers
        reconnect with the new ones). Return how many were dropped."""
        self.keys = keys
        accepted = {
            scope: {key_id(k) for k in keys.accepted(scope)}
            for scope in {c.proven.scope for c in self._live}}
        dropped = 0
        for conn in list(self._live):
            if self._drop_retired(conn, accepted):
                dropped += 1
        return dropped

    def _drop_retired(self, conn: wire.Connection,
                      accepted: dict[str | None, set[str]] | None = None) -> bool:
        """Drop ``conn`` if it proved a key or a CA the current keys no longer accept."""
        proven, keys = conn.proven, self.keys
        if accepted is None:
            accepted = {proven.scope: {key_id(k) for k in keys.accepted(proven.scope)}}
        authorities = keys.tls.authorities if keys.tls is not None else None
        stale_key = proven.key is not None and proven.key not in accepted[proven.scope]
        stale_ca = (proven.issuer is not None and authorities is not None
                    and proven.issuer not in authorities)
        if not (stale_key or stale_ca):
            return False
        logger.info("%s: dropping the connection with %s: its %s was retired",
                    self.role, conn.peer, "key" if stale_key else "CA")
        conn.reset = True  # a blip to both sides: the peer reconnects, work is kept
        conn.abort()
        return True

    # Dispatch ----------------------------------------------------------------------------

    def handlers(self) -> dict[type[m.Message], Handler]:
        """Every message type this endpoint handles -> its handler, written out: a test holds
        it to the role's inbound union and its internal messages."""
        raise NotImplementedError

    def post(self, message: m.Message, conn: wire.Connection | None = None) -> None:
        self._inbox.put_nowait((message, conn))

    async def ask(self, request: m.Message, kind: type[T], timeout: float = ASK_TIMEOUT) -> T:
        """The one door for callers inside this process (the REST server, any later HTTP
        action): the request goes through the inbox to its handler, as RPC does, and the
        handler's answer comes back here."""
        reply = LocalReply()
        self.post(request, cast("wire.Connection", reply))  # duck-typed: see LocalReply
        answer = await asyncio.wait_for(reply.answer, timeout)
        if isinstance(answer, m.NotLeader):
            raise NotLeaderError(f"this master is {answer.state}: it does not take requests "
                                 f"until it leads")
        if not isinstance(answer, kind):
            raise TypeError(f"{type(request).__name__} was answered with "
                            f"{type(answer).__name__}")
        return answer

    def handle(self, message: m.Message, conn: wire.Connection | None = None) -> None:
        """Call the handler for one message (the consumer does this; so do unit tests)."""
        kind = type(message)
        handler = self._handlers.get(kind)
        if handler is None:
            logger.warning("%s: unexpected %s from %s; closing that connection",
                           self.role, kind.__name__, conn.peer if conn else "self")
            if conn is not None:
                conn.close()
            return
        handler(message, conn)

    async def _consume(self) -> None:
        while True:
            message, conn = await self._inbox.get()
            began = time.perf_counter()
            try:
                self.handle(message, conn)
            except FatalError as exc:
                logger.error("%s: %s; exiting", self.role, exc)
                self.stop(1)
                return
            except Exception:
                logger.exception("%s: handler for %s failed", self.role, type(message).__name__)
            self.stats.observe("messages", time.perf_counter() - began, type(message).__name__)

    # Tasks and timers --------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def after(self, delay: float, message: m.Message, conn: wire.Connection | None = None
              ) -> asyncio.TimerHandle:
        """Post ``message`` once, ``delay`` seconds from now."""
        return asyncio.get_running_loop().call_later(delay, self.post, message, conn)

    def every(self, interval: float, make: Callable[[], m.Message]) -> asyncio.Task[Any]:
        """Post ``make()`` every ``interval`` seconds."""
        async def tick() -> None:
            while True:
                await asyncio.sleep(interval)
                self.post(make())
        return self.spawn(tick(), name=f"every {interval:g}s")

    # Lifecycle ---------------------------------------------------------------------------

    @property
    def stopped(self) -> asyncio.Event:
        if self._stopped is None:
            self._stopped = asyncio.Event()
        return self._stopped

    def stop(self, code: int = 0) -> None:
        """Ask the process to shut down with this exit code (first request wins)."""
        if not self.stopped.is_set():
            self.exit_code = code
            self.stopped.set()

    async def start(self) -> None:
        """Bind, start the consumer and timers (each role fills this in)."""
        raise NotImplementedError

    async def shutdown(self, reason: str) -> None:
        """Say goodbye to peers before the process exits (each role fills this in)."""
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Whether the role is ready beyond its sockets being up (a worker: registered)."""
        return True

    def announce_if_ready(self) -> None:
        """Send READY=1 once, when the RPC port accepts and the role is ready (a worker:
        registered). The web UI follows about 0.2 s later; readiness does not wait for it."""
        if not self._announced_ready and self.serving and self.is_ready():
            self._announced_ready = True
            sd_notify("READY=1", f"STATUS={self.role} ready", f"MAINPID={os.getpid()}")

    def start_consumer(self) -> None:
        self.spawn(self._consume(), name=f"{self.role} inbox")

    async def close_tasks(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # Connections -------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        """Bind the RPC port and accept connections; return the bound port."""
        try:
            # the kernel's queue of connections not yet accepted: as deep as the handshakes
            # allowed, so that a whole cluster starting at once is not dropped and retried
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self._protocol, host, port,
                                                    reuse_address=True,
                                                    backlog=max(128, self.limits.handshakes))
        except OSError as exc:
            raise ConfigError(f"{self.role} cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def _protocol(self) -> asyncio.Protocol:
        """A stream protocol for one inbound connection. With TLS, it reads nothing until
        the TLS handshake takes the connection over (wire.accept): bytes read before would
        be lost to it."""
        reader = asyncio.StreamReader()
        if self.keys.tls is not None:
            return _TlsFirst(reader, self._accept)
        return asyncio.StreamReaderProtocol(reader, self._accept)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handshake and serve one inbound connection, within per-host and total limits."""
        peer = wire.peer_name(writer)
        source = source_of(peer.rpartition(":")[0])
        full = self._over_limit(source)
        if full:
            self._admission.refused(self.role, peer, source, f"too many {full}")
            writer.close()
            return
        stranger = self._admission.begin(source)
        conn = None
        try:
            conn = await wire.accept(reader, writer, self.keys, self.accepts)
        except WireError as exc:
            self._admission.refused(self.role, peer, source, str(exc))
            return
        finally:
            self._admission.end(source, stranger, authenticated=conn is not None)
        if conn.proven.scope is not None and not self.takes_jobs:
            self._admission.refused(self.role, peer, source,
                                    f"a job's credential ({conn.proven.scope}) is not "
                                    f"accepted by a {self.role}")
            conn.abort()
            return
        if self._drop_retired(conn):  # its handshake began with keys reloaded since
            return
        self._connections += 1
        try:
            await self.serve_connection(conn)
        finally:
            self._connections -= 1

    def _over_limit(self, source: str) -> str | None:
        pending = self._admission.over_limit(source)
        if pending:
            return pending
        if self._connections >= self.limits.connections:
            return f"connections (limit {self.limits.connections})"
        return None

    async def serve_connection(self, conn: wire.Connection) -> None:
        """Post every message of ``conn`` to the inbox, then ConnectionClosed."""
        reason = None
        self._live.add(conn)
        try:
            async for message in conn.messages():
                self.post(message, conn)
        except WireError as exc:
            reason = str(exc)
            logger.warning("%s: closing connection with %s: %s", self.role, conn.peer, reason)
        finally:
            if reason is None:
                reason = ("connection closed here" if conn.closed else "connection reset"
                          if conn.reset else "connection closed by peer")
            conn.close()
            self._live.discard(conn)
            self.post(m.ConnectionClosed(reason, conn.reset), conn)
