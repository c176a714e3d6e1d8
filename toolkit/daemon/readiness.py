"""The sd_notify protocol, listening side: wait for READY=1 from the process we started."""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time
from collections.abc import Callable
from types import TracebackType

from toolkit.errors import ConfigError
from toolkit.runtime.notify import notify_address


class ReadinessListener:
    """Bind an abstract datagram socket; the started process sends READY=1 to it."""

    def __init__(self, name: str, what: str) -> None:
        self.name = name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(notify_address(name))
        except OSError as exc:
            self._sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"another `ember daemon start` of {what} is under way"
                                  ) from None
            raise

    def __enter__(self) -> ReadinessListener:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._sock.close()

    def wait(self, timeout: float, failure: Callable[[], str | None]) -> str | None:
        """Wait for READY=1. Return None when ready, else why not (``failure()`` or a timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"not ready after {timeout:g} s"
            readable, _, _ = select.select([self._sock], [], [], min(0.05, remaining))
            if readable:
                with contextlib.suppress(OSError):
                    data = self._sock.recv(4096)
                    if "READY=1" in data.decode(errors="replace").splitlines():
                        return None
            reason = failure()
            if reason is not None:
                return reason
