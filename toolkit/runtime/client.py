"""Clients of the master: the submission client (`ember submit`, `ember driver ...`) and the
application client a driver program uses to get executors.

Both speak the same authenticated wire protocol as workers. Their keys come from the
environment unless given (config.keys_from_env): an operator's ``EMBER_SECRET_FILE``, or the
``EMBER_CREDENTIAL_FILE`` a worker writes for each driver it runs (scoped to that driver's
work), and ``EMBER_TLS_DIR``.
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

from toolkit.errors import ConfigError, NotLeaderError, WireError
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.config import keys_from_env, parse_master_url
from toolkit.runtime.keys import Keys

logger = logging.getLogger(__name__)

REPLY_TIMEOUT = 10.0
FOLLOW_TIMEOUT = 60.0
"""How long a client looks for a leading master (a failover, a recovery) before it gives up."""
FOLLOW_PAUSE = 0.1
"""Seconds between rounds over the masters while none leads (clients are few: a short pause)."""
CHECK_EVERY = 1.0
"""Seconds between a following client's checks that its master still answers."""
CHECK_TIMEOUT = 2.0
"""A master that does not answer a check within this is left for the leader: it is frozen,
or cut off with the connection still up (no reset ever comes)."""
FOLLOW_CONNECT_TIMEOUT = (0.5, 4.0)
"""Seconds to connect to one master while looking for the leader, doubling each round from
the first to the second (a frozen master accepts the connection and never answers the
handshake: it should not hold the others up long)."""

T = TypeVar("T", bound=m.Message)


async def connect_master(master_url: str, secret: Keys | bytes | None) -> wire.Connection:
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

    def __init__(self, conn: wire.Connection, master_url: str | None = None,
                 secret: Keys | bytes | None = None, from_env: bool = False) -> None:
        self.conn = conn
        self._masters = parse_master_url(master_url) if master_url else []
        self._secret = secret
        self._from_env = from_env
        """The keys came from the environment's files: read them again to reconnect (a
        rotation rewrites a job's credential file and the CA its worker copied for it)."""
        self.inbox: asyncio.Queue[m.Message | None] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[m.Message]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read(conn), name="client reader")
        self._checker: asyncio.Task[None] | None = None
        self._following = False
        """Looking for the leader: the check leaves the connection alone meanwhile."""

    def _keep_checking(self) -> None:
        """With several masters, check the master every CHECK_EVERY s: one that does not
        answer (or no longer leads) is dropped, and whoever waits follows the leader, as when
        a master goes (its connection reset or closed)."""
        if len(self._masters) > 1 and self._checker is None:
            self._checker = asyncio.create_task(self._check(), name="client master check")

    async def _check(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            conn = self.conn
            if conn.closed or self._following:
                continue
            try:
                await self.ask(m.RequestLeadership(), m.LeadershipResponse, CHECK_TIMEOUT)
                continue
            except TimeoutError:
                why = f"did not answer within {CHECK_TIMEOUT:g} s"
            except NotLeaderError as exc:
                why = f"no longer leads ({exc})"
            except ConnectionError:
                continue  # the reader has said so already
            if conn is self.conn and not self._following:
                logger.warning("The master at %s %s; looking for the leader", conn.peer, why)
                conn.abort()

    def _attach(self, conn: wire.Connection) -> None:
        """Go on over another connection (another master). The old one is aborted, not
        closed: a master that still reads it sees a reset (a blip, its applications wait for
        their program), never a program that ended."""
        self.conn.abort()
        self._reader.cancel()
        self.conn = conn
        self._reader = asyncio.create_task(self._read(conn), name="client reader")

    async def _read(self, conn: wire.Connection) -> None:
        try:
            async for message in conn.messages():
                waiting = self._pending.pop(getattr(message, "in_reply_to", 0), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
                else:
                    self.inbox.put_nowait(message)
        except WireError as exc:
            logger.warning("Connection to the master broke: %s", exc)
        finally:
            if conn is self.conn:  # not a connection left for another master (_attach)
                for waiting in self._pending.values():
                    if not waiting.done():
                        waiting.set_exception(
                            ConnectionError("the master closed the connection"))
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
        if isinstance(answer, m.NotLeader):
            raise NotLeaderError(f"{answer.master_url} is {answer.state}")
        if not isinstance(answer, kind):
            raise ConnectionError(f"the master answered {type(answer).__name__} to "
                                  f"{type(request).__name__}")
        return answer

    async def _to_leader(self, request: m.Message, kind: type[T]) -> T:
        """``request`` answered by the leading master; ConnectionError when none leads within
        FOLLOW_TIMEOUT."""
        deadline = asyncio.get_running_loop().time() + FOLLOW_TIMEOUT
        while True:
            try:
                return await self.ask(request, kind)
            except NotLeaderError as exc:
                if not self._masters or asyncio.get_running_loop().time() > deadline:
                    raise ConnectionError(f"no master leads ({exc})") from None
                await self._next_master(deadline)

    async def _next_master(self, deadline: float) -> None:
        """Connect to the next master of the URL, in turn, pausing after a whole round."""
        here = self.conn.peer
        order = [f"{h}:{p}" for h, p in self._masters]
        start = order.index(here) + 1 if here in order else 0
        connect_timeout = FOLLOW_CONNECT_TIMEOUT[0]
        while True:
            for n in range(len(order)):
                host, port = self._masters[(start + n) % len(order)]
                if f"{host}:{port}" == here and len(order) > 1:
                    continue
                try:
                    conn = await wire.connect(host, port, self._keys(), wire.TO_CLIENT,
                                              timeout=connect_timeout)
                except (OSError, WireError):
                    continue
                self._attach(conn)
                return
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError("no master answers at "
                                      f"{', '.join(order)}")
            here = ""
            connect_timeout = min(connect_timeout * 2, FOLLOW_CONNECT_TIMEOUT[1])
            await asyncio.sleep(FOLLOW_PAUSE)

    def _keys(self) -> Keys | bytes | None:
        if self._from_env:
            try:
                self._secret = keys_from_env()
            except (ConfigError, OSError) as exc:  # mid-rewrite, or gone: the last ones
                logger.warning("Cannot read the credentials again (%s); using the last ones",
                               exc)
        return self._secret

    async def unsolicited(self, kind: type[T], timeout: float | None = None) -> T:
        """The next message that answers no request, of ``kind`` (others are dropped)."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), timeout)
            if message is None:
                raise ConnectionError("the master closed the connection")
            if isinstance(message, kind):
                return message

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
        self.conn.close()
        await self.conn.wait_closed(1.0)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class SubmissionClient(_Client):
    """Submit, watch, kill and list drivers. One request at a time.

    With several masters (``ember://m1,m2``) it talks to the one that leads: a master that
    does not (a standby, or one recovering) answers NotLeader and the next one is asked, for up
    to FOLLOW_TIMEOUT. A watched driver is followed to a new leader when the old one goes.
    A submission whose answer is lost with its master is not sent again: that is an error
    saying so, never a second driver.
    """

    def __init__(self, conn: wire.Connection, master_url: str | None = None,
                 secret: Keys | bytes | None = None) -> None:
        super().__init__(conn, master_url, secret)
        self._watched: str | None = None

    @classmethod
    async def open(cls, master_url: str, secret: Keys | bytes | None = None) -> SubmissionClient:
        return cls(await connect_master(master_url, secret), master_url, secret)

    async def __aenter__(self) -> SubmissionClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def submit(self, desc: m.DriverDescription, watch: bool = False
                     ) -> m.SubmitDriverResponse:
        """With ``watch``, every later state change arrives through ``next_status``."""
        response = await self._to_leader(m.RequestSubmitDriver(desc, watch),
                                         m.SubmitDriverResponse)
        if watch and response.success:
            self._watched = response.driver_id
            self._keep_checking()
        return response

    async def status(self, driver_id: str, watch: bool = False) -> m.DriverStatusResponse:
        status = await self._to_leader(m.RequestDriverStatus(driver_id, watch),
                                       m.DriverStatusResponse)
        if watch and status.found:
            self._watched = driver_id
            self._keep_checking()
        return status

    async def next_status(self, timeout: float | None = None) -> m.DriverStatusResponse:
        """The next update of a watched driver (a submit or status with ``watch``); if its
        master goes, the driver's state at the new leader (watched there from then on)."""
        try:
            status = await self.unsolicited(m.DriverStatusResponse, timeout)
        except ConnectionError:
            if not self._masters or self._watched is None:
                raise
            logger.warning("Lost the master; following driver %s to the leader", self._watched)
            loop = asyncio.get_running_loop()
            self._following = True
            try:
                await self._next_master(loop.time() + FOLLOW_TIMEOUT)
                status = await self.status(self._watched, watch=True)
            finally:
                self._following = False
        if status.relaunched_as:
            self._watched = status.relaunched_as
        return status

    async def kill(self, driver_id: str) -> m.KillDriverResponse:
        return await self._to_leader(m.RequestKillDriver(driver_id), m.KillDriverResponse)

    async def kill_all(self) -> m.KillAllDriversResponse:
        return await self._to_leader(m.RequestKillAllDrivers(), m.KillAllDriversResponse)

    async def clear(self) -> m.ClearCompletedDriversAndAppsResponse:
        return await self._to_leader(m.RequestClearCompletedDriversAndApps(),
                                     m.ClearCompletedDriversAndAppsResponse)

    async def list(self) -> list[m.DriverStatusResponse]:
        return (await self._to_leader(m.RequestDriverList(), m.DriverListResponse)).drivers


class ApplicationClient(_Client):
    """A driver program's link to the master: register an application, then read its events
    (ExecutorAdded, ExecutorUpdated, WorkerRemoved, ApplicationRemoved) with ``event()``.

    Use ``async with ApplicationClient.register(...) as app``: leaving the block unregisters
    the application, which ends its executors. If the program just dies, the master notices
    the closed connection and ends the application as FAILED.
    """

    def __init__(self, conn: wire.Connection, app_id: str,
                 desc: m.ApplicationDescription | None = None, master_url: str | None = None,
                 secret: Keys | bytes | None = None, from_env: bool = False) -> None:
        super().__init__(conn, master_url, secret, from_env)
        self.app_id = app_id
        self.desc = desc

    @classmethod
    async def register(cls, desc: m.ApplicationDescription, master_url: str | None = None,
                       secret: Keys | bytes | None = None) -> ApplicationClient:
        url = master_url or os.environ.get("EMBER_MASTER_URL")
        if not url:
            raise ConfigError("no master URL: pass one or set EMBER_MASTER_URL")
        if not desc.user:
            desc = msgspec.structs.replace(desc, user=getpass.getuser())
        from_env = secret is None
        secret = secret if secret is not None else keys_from_env()
        client = cls(await connect_master(url, secret), "", desc, url, secret, from_env)
        registered = await client._to_leader(m.RegisterApplication(desc),
                                             m.RegisteredApplication)
        client.app_id = registered.app_id
        logger.info("Registered application %s as %s", desc.name, client.app_id)
        client._keep_checking()
        return client

    async def __aenter__(self) -> ApplicationClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def event(self, timeout: float | None = None) -> m.Message:
        """The next event from the master. When the master goes, the application is taken
        back to the leader (a restarted master, or a standby that took over) and the events
        go on; ConnectionError when no master takes it back."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), timeout)
            if message is not None:
                return message
            await self._back_to_the_leader()

    async def _back_to_the_leader(self) -> None:
        if not self._masters or self.desc is None:
            raise ConnectionError("the master closed the connection")
        logger.warning("Lost the master; taking application %s back to the leader",
                       self.app_id)
        self._following = True
        try:
            await self._next_master(asyncio.get_running_loop().time() + FOLLOW_TIMEOUT)
            await self._to_leader(m.ReconnectApplication(self.app_id, self.desc),
                                  m.RegisteredApplication)
        except ConnectionError as exc:
            raise ConnectionError(f"application {self.app_id} was not taken back: {exc}"
                                  ) from None
        finally:
            self._following = False
        logger.info("Application %s is back with the leader", self.app_id)

    async def stop(self) -> None:
        """Unregister (the master ends the executors) and close."""
        if not self.conn.closed:
            self.conn.send(m.UnregisterApplication(self.app_id))
        await self.close()
