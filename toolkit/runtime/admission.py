"""Who may start a handshake: the limits of Endpoint._accept, kept so that a stranger cannot
lock the cluster's own peers out.

- Sources, not addresses: an IPv6 peer counts by its /64 (one host or one LAN can use a
  whole /64 of addresses), an IPv4 peer by its address.
- Peers that once completed a handshake (authenticated: workers, clients, drivers of this
  cluster) are known: the pool of pending handshakes strangers share never keeps them out;
  only their own per-source cap applies.
- Refusals are logged once a minute per source and reason, with how many there were, never
  once each.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable

logger = logging.getLogger("toolkit.runtime.endpoint")

KNOWN_MAX = 100_000
"""Sources remembered as known (a 5,000-worker cluster and its clients fit many times)."""
REFUSAL_LOG_EVERY = 60.0


def source_of(host: str) -> str:
    """The source a peer address counts under: its /64 for IPv6, itself otherwise."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class RefusalLog:
    """Refusals, logged at most once a minute per source and reason (numbers aside)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._refused: dict[str, tuple[float, int]] = {}

    def __call__(self, role: str, peer: str, source: str, why: str) -> None:
        now = self.monotonic()
        key = f"{source} {re.sub(r'[0-9]+', '#', why)}"
        last, count = self._refused.get(key, (float("-inf"), 0))
        if now - last < REFUSAL_LOG_EVERY:
            self._refused[key] = (last, count + 1)
            return
        more = f" (and {count} more like it from {source} in the last minute)" if count else ""
        logger.warning("%s: refused connection from %s: %s%s", role, peer, why, more)
        self._refused[key] = (now, 0)
        if len(self._refused) > KNOWN_MAX:
            self._refused.clear()


class Admission:
    def __init__(self, handshakes: int, per_source: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.handshakes, self.per_source = handshakes, per_source
        self.strangers_pending = 0
        self.by_source: dict[str, int] = {}
        self.known: set[str] = set()
        self.refused = RefusalLog(monotonic)

    def over_limit(self, source: str) -> str | None:
        if self.by_source.get(source, 0) >= self.per_source:
            return f"pending handshakes from {source} (limit {self.per_source})"
        if source not in self.known and self.strangers_pending >= self.handshakes:
            return f"pending handshakes from unknown peers (limit {self.handshakes})"
        return None

    def begin(self, source: str) -> bool:
        """A handshake starts; True if it counts in the strangers' pool."""
        self.by_source[source] = self.by_source.get(source, 0) + 1
        stranger = source not in self.known
        self.strangers_pending += stranger
        return stranger

    def end(self, source: str, stranger: bool, authenticated: bool) -> None:
        self.strangers_pending -= stranger
        self.by_source[source] -= 1
        if not self.by_source[source]:
            del self.by_source[source]
        if authenticated and len(self.known) < KNOWN_MAX:
            self.known.add(source)
