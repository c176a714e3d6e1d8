"""How the master's answers are made: a response tied to its request, a worker's report
acknowledged once handled, a driver checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from toolkit.runtime import messages as m

if TYPE_CHECKING:
    from toolkit.runtime.wire import Connection

Report = Callable[[Any, Any, "Connection | None"], None]

R = TypeVar("R", m.SubmitDriverResponse, m.KillDriverResponse, m.DriverStatusResponse,
            m.KillAllDriversResponse, m.ClearCompletedDriversAndAppsResponse)


def reply(response: R, request_id: int) -> R:
    """The response as the answer to one request: the client matches it by this id."""
    return msgspec.structs.replace(response, in_reply_to=request_id)


def acked(handle: Report) -> Report:
    """A worker's state change acknowledged once handled, and so recorded: a store that fails
    stops the master before the ack, and the worker sends the report again to the next
    leader (an ack first would have lost a driver's end, and run it again)."""
    def handled(self: Any, msg: Any, conn: Connection | None) -> None:
        handle(self, msg, conn)
        if conn is not None:
            conn.send(m.StateChangeAcked(msg.seq))
    return handled


def check_driver(desc: m.DriverDescription) -> str | None:
    """What is wrong with a driver description built in-process (the wire checks its own)."""
    if not desc.command or not all(isinstance(a, str) for a in desc.command):
        return "the driver command must be a non-empty list of strings"
    if desc.cores < 1:
        return f"driver cores must be at least 1, not {desc.cores}"
    if desc.memory < 1:
        return f"driver memory must be at least 1 MiB, not {desc.memory}"
    return None
