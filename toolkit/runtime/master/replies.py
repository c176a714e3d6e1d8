"""How the master's answers are made: a response tied to its request, a driver checked."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from toolkit.runtime import messages as m

R = TypeVar("R", m.SubmitDriverResponse, m.KillDriverResponse, m.DriverStatusResponse,
            m.KillAllDriversResponse, m.ClearCompletedDriversAndAppsResponse)


def reply(response: R, request_id: int) -> R:
    """The response as the answer to one request: the client matches it by this id."""
    return msgspec.structs.replace(response, in_reply_to=request_id)


def check_driver(desc: m.DriverDescription) -> str | None:
    """What is wrong with a driver description built in-process (the wire checks its own)."""
    if not desc.command or not all(isinstance(a, str) for a in desc.command):
        return "the driver command must be a non-empty list of strings"
    if desc.cores < 1:
        return f"driver cores must be at least 1, not {desc.cores}"
    if desc.memory < 1:
        return f"driver memory must be at least 1 MiB, not {desc.memory}"
    return None
