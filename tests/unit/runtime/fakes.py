"""A stand-in connection for handler unit tests: records what a handler sends."""

from __future__ import annotations

from toolkit.runtime import messages as m
from toolkit.runtime.wire import PLAIN, Proven


class FakeConn:
    def __init__(self, peer: str = "127.0.0.1:5000", proven: Proven = PLAIN) -> None:
        self.peer = peer
        self.proven = proven
        self.sent: list[m.Message] = []
        self.closed = False
        self.aborted = False

    def send(self, message: m.Message) -> bool:
        if self.closed:
            return False
        self.sent.append(message)
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def last(self) -> m.Message:
        return self.sent[-1]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
