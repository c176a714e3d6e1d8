"""The sd_notify protocol, listening side: wait for READY=1 from the process we started."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import select
import socket
import struct
import time
from collections.abc import Callable
from types import TracebackType

from toolkit.base.notify import notify_address
from toolkit.errors import ConfigError


class ReadinessListener:
    """Bind an abstract datagram socket; the started process sends READY=1 to it."""

    def __init__(self, name: str, what: str, run_user: str | None = None) -> None:
        """``run_user``: the role runs as that user (started by root), whose word counts too."""
        self.name = name
        self._uids = {os.getuid(), 0}
        if run_user is not None:
            with contextlib.suppress(KeyError):
                self._uids.add(pwd.getpwnam(run_user).pw_uid)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
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
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _receive(self) -> bool:
        """Read one datagram; True if it is READY=1 from a process of this user, of root or
        of the run user."""
        size = struct.calcsize("3i")
        data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(size))
        uid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                _pid, uid, _gid = struct.unpack("3i", payload[:size])
        if uid not in self._uids:
            return False
        return "READY=1" in data.decode(errors="replace").splitlines()

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
                    if self._receive():
                        return None
            reason = failure()
            if reason is not None:
                return reason
