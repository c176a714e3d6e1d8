"""What a job may ask of the master, and a worker's registration bound to its certificate.

A job never holds the cluster secret: its worker gives it a credential for the scope
``driver:<its id>`` (keys.py). Over a connection that proved a scope, the master takes only:
leadership checks, the job's own application (registered, reconnected, unregistered), drivers
it submits (owned by its scope), kills and status of itself and what it owns, and a list of
those. A scope whose driver has ended is refused altogether. Anything else is answered with a
refusal the client can read (a registration with RegisterWorkerFailed), and logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from toolkit.runtime import messages as m

if TYPE_CHECKING:
    from toolkit.runtime.master.work import Work
    from toolkit.runtime.wire import Connection

logger = logging.getLogger(__name__)

_ALWAYS = (m.RequestLeadership, m.ConnectionClosed, m.UnregisterApplication)
"""ConnectionClosed is posted by the endpoint; UnregisterApplication is checked against the
application's own link."""


def driver_of(scope: str) -> str | None:
    kind, _, ident = scope.partition(":")
    return ident if kind == "driver" and ident else None


def owner_of(work: Work, driver_id: str) -> str | None:
    driver = work.drivers.get(driver_id) or work.drivers.find(driver_id)
    return driver.desc.owner if driver is not None else None


def admit(work: Work, message: m.Message, scope: str) -> m.Message | str:
    """The message to handle for a connection that proved ``scope`` (owned work stamped with
    the scope), or why it is refused."""
    if isinstance(message, _ALWAYS):
        return message
    driver_id = driver_of(scope)
    if driver_id is None or work.drivers.get(driver_id) is None:
        return f"the credential of {scope} is no longer valid: that driver has ended"
    if isinstance(message, m.RequestSubmitDriver):
        desc = msgspec.structs.replace(message.desc, owner=scope)
        return msgspec.structs.replace(message, desc=desc)
    if isinstance(message, m.RequestDriverList):
        return msgspec.structs.replace(message, scope=scope)
    if isinstance(message, m.RegisterApplication):
        desc_app = msgspec.structs.replace(message.desc, owner=scope)
        return msgspec.structs.replace(message, desc=desc_app)
    if isinstance(message, m.ReconnectApplication):
        app = work.apps.get(message.app_id)
        if app is not None and app.desc.owner == scope:
            return message
        return f"{scope} may reconnect only its own applications"
    if isinstance(message, (m.RequestKillDriver, m.RequestDriverStatus)):
        target = message.driver_id
        if target == driver_id or owner_of(work, target) == scope:
            return message
        return f"{scope} may act only on itself and the drivers it submitted"
    return f"{type(message).__name__} is not allowed with a job's credential ({scope})"


def refuse(message: m.Message, conn: Connection, reason: str) -> None:
    """Answer a refused request the way its client reads a failure; close otherwise."""
    logger.warning("Refusing %s from %s: %s", type(message).__name__, conn.peer, reason)
    request_id: int = getattr(message, "request_id", 0)
    if isinstance(message, m.RequestSubmitDriver):
        conn.send(m.SubmitDriverResponse(False, None, reason, in_reply_to=request_id))
    elif isinstance(message, m.RequestKillDriver):
        conn.send(m.KillDriverResponse(message.driver_id, False, reason,
                                       in_reply_to=request_id))
    elif isinstance(message, m.ReconnectApplication):
        conn.send(m.ApplicationRemoved(reason, in_reply_to=request_id))
    elif isinstance(message, m.RequestDriverStatus):
        conn.send(m.DriverStatusResponse(message.driver_id, False, message=reason,
                                         in_reply_to=request_id))
    elif isinstance(message, m.RequestKillAllDrivers):
        conn.send(m.KillAllDriversResponse(False, reason, in_reply_to=request_id))
    elif isinstance(message, m.RequestClearCompletedDriversAndApps):
        conn.send(m.ClearCompletedDriversAndAppsResponse(False, reason, in_reply_to=request_id))
    elif isinstance(message, m.RegisterWorker):
        conn.send(m.RegisterWorkerFailed(reason))
    else:
        conn.close()


def certified(conn: Connection | None, host: str, tls: bool) -> bool:
    """With TLS, whether ``conn``'s peer certificate names ``host``: a worker registers only
    for the host its certificate is for."""
    return not tls or (conn is not None and host in conn.proven.hosts)
