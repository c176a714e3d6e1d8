"""Clients of the master: the submission client (`ember submit`, `ember driver ...`) and the
application client a driver program uses to get executors.

Both speak the same authenticated wire protocol as workers. The cluster secret comes from
``EMBER_SECRET_FILE`` unless given; a worker sets that variable for the drivers it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import logging
import os
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from toolkit.errors import ConfigError, WireError
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.config import parse_master_url, read_secret_file

logger = logging.getLogger(__name__)

REPLY_TIMEOUT = 10.0

T = TypeVar("T", bound=m.Message)


def secret_from_env() -> bytes | None:
    path = os.environ.get("EMBER_SECRET_FILE")
    return read_secret_file(path) if path else None


async def connect_master(master_url: str, secret: bytes | None) -> wire.Connection:
    """Connect to the first master of ``master_url`` that answers; errors name every one."""
    problems = []
    for host, port in parse_master_url(master_url):
        try:
            return await wire.connect(host, port, secret, wire.TO_CLIENT)
        except (OSError, WireError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            problems.append(f"{host}:{port}: {reason}")
    raise ConnectionError(f"cannot reach the master at {master_url}: {'; '.join(problems)}")


class _Client:
    """One connection to the master. Each request carries an id and its reply is matched by
    it; what answers no request (a watched driver's update, an application's event) waits in
    ``inbox`` for whoever reads it."""

    def __init__(self, conn: wire.Connection) -> None:
        self.conn = conn
        self.inbox: asyncio.Queue[m.Message | None] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[m.Message]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read(), name="client reader")

    async def _read(self) -> None:
        try:
            async for message in self.conn.messages():
                waiting = self._pending.pop(getattr(message, "in_reply_to", 0), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
                else:
                    self.inbox.put_nowait(message)
        except WireError as exc:
            logger.warning("Connection to the master broke: %s", exc)
        finally:
            for waiting in self._pending.values():
                if not waiting.done():
                    waiting.set_exception(ConnectionError("the master closed the connection"))
            self._pending.clear()
            self.inbox.put_nowait(None)

    async def ask(self, request: m.Message, kind: type[T],
                  timeout: float | None = REPLY_TIMEOUT) -> T:
        """Send ``request`` with a new id and await the reply that carries it back."""
        request_id = next(self._ids)
        reply: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        if self._reader.done() or not self.conn.send(
                msgspec.structs.replace(request, request_id=request_id)):
            self._pending.pop(request_id, None)
            raise ConnectionError("the master closed the connection")
        try:
            answer = await asyncio.wait_for(reply, timeout)
        finally:
            self._pending.pop(request_id, None)
        if not isinstance(answer, kind):
            raise ConnectionError(f"the master answered {type(answer).__name__} to "
                                  f"{type(request).__name__}")
        return answer

    async def unsolicited(self, kind: type[T], timeout: float | None = None) -> T:
        """The next message that answers no request, of ``kind`` (others are dropped)."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), timeout)
            if message is None:
                raise ConnectionError("the master closed the connection")
            if isinstance(message, kind):
                return message

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed(1.0)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class SubmissionClient(_Client):
    """Submit, watch, kill and list drivers. One request at a time."""

    @classmethod
    async def open(cls, master_url: str, secret: bytes | None = None) -> SubmissionClient:
        return cls(await connect_master(master_url, secret))

    async def __aenter__(self) -> SubmissionClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def submit(self, desc: m.DriverDescription, watch: bool = False
                     ) -> m.SubmitDriverResponse:
        """With ``watch``, every later state change arrives through ``next_status``."""
        return await self.ask(m.RequestSubmitDriver(desc, watch), m.SubmitDriverResponse)

    async def status(self, driver_id: str, watch: bool = False) -> m.DriverStatusResponse:
        return await self.ask(m.RequestDriverStatus(driver_id, watch), m.DriverStatusResponse)

    async def next_status(self, timeout: float | None = None) -> m.DriverStatusResponse:
        """The next update of a watched driver (a submit or status with ``watch``)."""
        return await self.unsolicited(m.DriverStatusResponse, timeout)

    async def kill(self, driver_id: str) -> m.KillDriverResponse:
        return await self.ask(m.RequestKillDriver(driver_id), m.KillDriverResponse)

    async def kill_all(self) -> m.KillAllDriversResponse:
        return await self.ask(m.RequestKillAllDrivers(), m.KillAllDriversResponse)

    async def clear(self) -> m.ClearCompletedDriversAndAppsResponse:
        return await self.ask(m.RequestClearCompletedDriversAndApps(),
                              m.ClearCompletedDriversAndAppsResponse)

    async def list(self) -> list[m.DriverStatusResponse]:
        return (await self.ask(m.RequestDriverList(), m.DriverListResponse)).drivers


class ApplicationClient(_Client):
    """A driver program's link to the master: register an application, then read its events
    (ExecutorAdded, ExecutorUpdated, WorkerRemoved, ApplicationRemoved) with ``event()``.

    Use ``async with ApplicationClient.register(...) as app``: leaving the block unregisters
    the application, which ends its executors. If the program just dies, the master notices
    the closed connection and ends the application as FAILED.
    """

    def __init__(self, conn: wire.Connection, app_id: str) -> None:
        super().__init__(conn)
        self.app_id = app_id

    @classmethod
    async def register(cls, desc: m.ApplicationDescription, master_url: str | None = None,
                       secret: bytes | None = None) -> ApplicationClient:
        url = master_url or os.environ.get("EMBER_MASTER_URL")
        if not url:
            raise ConfigError("no master URL: pass one or set EMBER_MASTER_URL")
        if not desc.user:
            desc = msgspec.structs.replace(desc, user=getpass.getuser())
        conn = await connect_master(url, secret if secret is not None else secret_from_env())
        client = cls(conn, "")
        registered = await client.ask(m.RegisterApplication(desc), m.RegisteredApplication)
        client.app_id = registered.app_id
        logger.info("Registered application %s as %s", desc.name, client.app_id)
        return client

    async def __aenter__(self) -> ApplicationClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def event(self, timeout: float | None = None) -> m.Message:
        """The next event from the master; ConnectionError when the master goes away."""
        message = await asyncio.wait_for(self.inbox.get(), timeout)
        if message is None:
            raise ConnectionError("the master closed the connection")
        return message

    async def stop(self) -> None:
        """Unregister (the master ends the executors) and close."""
        if not self.conn.closed:
            self.conn.send(m.UnregisterApplication(self.app_id))
        await self.close()
