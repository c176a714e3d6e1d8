"""The limits of an HTTP port (the web UI's, the REST API's), in front of aiohttp.

aiohttp holds an idle connection for about an hour and takes as many as come: anyone could
hold every file descriptor of the process and starve its RPC port. Here each port takes at
most ``connections`` at once and ``per_source`` from one source (an IPv6 /64, an IPv4
address); a connection must finish its first request's headers within ``header_timeout``;
aiohttp closes one idle between requests after KEEPALIVE seconds. Whatever is over a limit
is closed at once, and refusals are logged once a minute per source.

With TLS (HTTPS), a connection is admitted first and its TLS handshake then counts against
the same limits and the same header timeout: a stranger cannot hold handshakes open beyond
them either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from toolkit.runtime.admission import RefusalLog, source_of

T = TypeVar("T")
KEEPALIVE = 15.0
"""Seconds aiohttp keeps an idle connection between requests (its default is an hour)."""
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
"""Seconds a request's body may take to arrive (within_body_timeout): aiohttp waits as long as
the sender likes, so a body sent a byte at a time would hold its connection for good."""
CONNECTIONS = 256
PER_SOURCE = 32
TlsSource = ssl.SSLContext | Callable[[], ssl.SSLContext | None] | None
"""HTTPS: a server context, or what returns the current one (None: plain HTTP)."""
LINGER = 2.0
"""Seconds aiohttp goes on reading a body its handler left unread before it closes the
connection (10 by default): enough for a client to finish sending a small request and read
the answer, not for a drip to hold the connection much past BODY_TIMEOUT."""
RUNNER_LIMITS: dict[str, Any] = {"keepalive_timeout": KEEPALIVE, "max_line_size": 8190,
                                 "max_field_size": 8190, "max_headers": 64,
                                 "lingering_time": LINGER}
"""aiohttp's own limits for every HTTP port: keep-alive, request line and header sizes,
lingering."""


async def within_body_timeout(read: Awaitable[T]) -> T:
    """A request's body, or 408 when it does not arrive within BODY_TIMEOUT; the connection
    is closed LINGER seconds after the answer."""
    from aiohttp import web

    try:
        return await asyncio.wait_for(read, BODY_TIMEOUT)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the request body did not arrive within {BODY_TIMEOUT:g} s") from None


class Guard:
    """A protocol factory that admits connections to ``factory`` (aiohttp's server)."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], name: str,
                 connections: int = CONNECTIONS, per_source: int = PER_SOURCE,
                 header_timeout: float = HEADER_TIMEOUT,
                 tls: TlsSource = None) -> None:
        self.factory, self.name = factory, name
        self._tls = tls
        self.connections, self.per_source = connections, per_source
        self.header_timeout = header_timeout
        self.open = 0
        self.by_source: dict[str, int] = {}
        self.refused = RefusalLog()

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The context for a new connection (read each time: a reload replaces it)."""
        return self._tls() if callable(self._tls) else self._tls

    def admit(self, source: str) -> str | None:
        if self.open >= self.connections:
            return f"too many connections (limit {self.connections})"
        if self.by_source.get(source, 0) >= self.per_source:
            return f"too many connections from {source} (limit {self.per_source})"
        self.open += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1
        return None

    def release(self, source: str) -> None:
        self.open -= 1
        self.by_source[source] -= 1
        if not self.by_source[source]:
            del self.by_source[source]


class _Guarded(asyncio.Protocol):
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.inner: Any = None
        self.source = ""
        self.admitted = False
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._tail = b""
        self._early = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.source = source_of(str(peer[0]))
        refused = self.guard.admit(self.source)
        if refused:
            self.guard.refused(self.guard.name, f"{peer[0]}:{peer[1]}", self.source, refused)
            transport.abort()
            return
        self.admitted = True
        self.transport = transport
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.header_timeout, self._too_slow)
        tls = self.guard.tls
        if tls is None:
            self._begin(transport)
        else:  # nothing is read before TLS takes over: start_tls resumes reading
            transport.pause_reading()
            self._handshake = loop.create_task(self._start_tls(transport, tls))

    async def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport, self, tls, server_side=True,
                ssl_handshake_timeout=self.guard.header_timeout)
        except (OSError, ConnectionError, TimeoutError, ssl.SSLError):
            transport.abort()
            self._release()
            return
        if secured is None or secured.is_closing():
            self._release()
            return
        self.transport = secured
        self._begin(secured)

    def _begin(self, transport: asyncio.Transport) -> None:
        self.inner = self.guard.factory()
        self.inner.connection_made(transport)
        early, self._early = self._early, b""
        if early:  # what TLS decrypted before the handshake's coroutine went on
            self.data_received(early)

    def _release(self) -> None:
        if self.admitted:
            self.admitted = False
            if self._deadline is not None:
                self._deadline.cancel()
            self.guard.release(self.source)

    def _too_slow(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            if self.admitted and len(self._early) < 65536:
                self._early += data
            return
        if self._deadline is not None:
            self._tail = (self._tail + data)[-4096:]
            if b"\r\n\r\n" in self._tail:  # the first request's headers are complete
                self._deadline.cancel()
                self._deadline, self._tail = None, b""
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received()) if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self.inner is not None:
            with contextlib.suppress(Exception):
                self.inner.connection_lost(exc)
            self.inner = None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


async def serve(runner: Any, host: str, port: int, name: str,
                connections: int = CONNECTIONS, tls: TlsSource = None) -> asyncio.Server:
    """Listen on ``host:port`` for a set-up aiohttp AppRunner, behind a Guard (HTTPS when
    ``tls`` is a server context)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        Guard(runner.server, name, connections, min(PER_SOURCE, connections), tls=tls),
        host, port, reuse_address=True)
