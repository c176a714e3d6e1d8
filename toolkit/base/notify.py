"""The sd_notify protocol, sender side: tell whoever started us that we are ready or stopping,
and keep systemd's watchdog fed when it set one (WATCHDOG_USEC).

systemd (Type=notify) and `ember daemon start` both set NOTIFY_SOCKET; the runtime sends the
same datagrams to either. A name starting with ``@`` is a Linux abstract socket. Errors are
ignored: nobody may be listening (a supervisor restart, say), and that is fine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

logger = logging.getLogger(__name__)


def notify_address(value: str) -> str:
    return "\0" + value[1:] if value.startswith("@") else value


def sd_notify(*fields: str) -> bool:
    """Send ``KEY=value`` lines to $NOTIFY_SOCKET; True if a listener received them."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as sock:
        try:
            sock.sendto("\n".join(fields).encode(), notify_address(target))
        except OSError as exc:
            logger.debug("sd_notify to %s failed: %s", target, exc)
            return False
    return True


def watchdog_interval(environ: dict[str, str] | None = None, pid: int | None = None
                      ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as sd_watchdog_enabled
    advises), or None when no watchdog is set for this process."""
    env = os.environ if environ is None else environ
    usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
