"""How a worker joins its masters: when to try again, its id, and whose word it takes."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

REGISTER_FIRST_DELAY = 0.1
REGISTER_MAX_DELAY = 1.0


def registration_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential from 0.1 s, capped at 1 s so a worker started before its master joins within
    about a second of the master coming up; "equal jitter" (half fixed, half random) keeps a
    restarted cluster's workers from connecting in lockstep.
    """
    ceiling = min(REGISTER_MAX_DELAY, REGISTER_FIRST_DELAY * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def comes_from(peer: str, host: str) -> bool:
    """Whether a connection from ``peer`` (ip:port) comes from ``host`` (a name or address)."""
    address = peer.rpartition(":")[0].strip("[]")
    if address == host:
        return True
    try:
        return address in {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False


def worker_id(host: str, port: int, now: float) -> str:
    return f"worker-{time.strftime('%Y%m%d%H%M%S', time.localtime(now))}-{host}-{port}"
