"""The sd_notify messages a real master sends to systemd: READY=1, WATCHDOG=1 pings at half of
WATCHDOG_USEC, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path

from tests.procs import cluster_in


def test_master_is_ready_feeds_the_watchdog_and_says_it_is_stopping(tmp_path: Path) -> None:
    name = f"ember-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        with cluster_in(tmp_path) as cluster:
            master = cluster.master(env={"NOTIFY_SOCKET": "@" + name,
                                         "WATCHDOG_USEC": "1000000"})  # a ping every 0.5 s
            messages: list[tuple[float, str]] = []
            deadline = time.monotonic() + 2.6
            while time.monotonic() < deadline:
                messages.append((time.monotonic(), listener.recv(4096).decode()))
            pings = [at for at, text in messages if text == "WATCHDOG=1"]
            assert any("READY=1" in text.splitlines() for _, text in messages)
            assert 4 <= len(pings) <= 8, messages
            # systemd restarts a service whose pings are further apart than WATCHDOG_USEC
            assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0
            master.proc.signal(signal.SIGTERM)
            while "STOPPING=1" not in listener.recv(4096).decode().splitlines():
                pass
            assert master.proc.wait() == 0
