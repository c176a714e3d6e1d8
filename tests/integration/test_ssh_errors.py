"""What an operator reads when SSH cannot even start: real sockets on 127.0.0.1, no lab."""

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.procs import free_port
from toolkit.inventory import HostEntry, SSHSettings
from toolkit.ops.ssh import SSHHost
from toolkit.ops.transport import HostError


def ssh_host(tmp_path: Path, port: int) -> SSHHost:
    settings = SSHSettings(user="nobody", known_hosts=tmp_path / "known_hosts",
                           connect_timeout=1.0, port=port)
    return SSHHost(HostEntry("127.0.0.1", "workers", {}), settings)


def test_a_port_that_accepts_but_sends_no_banner_is_named_as_such(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        held: list[socket.socket] = []
        accepting = threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True)
        accepting.start()
        host = ssh_host(tmp_path, port)
        started = time.monotonic()
        with pytest.raises(HostError) as caught:
            host.connect()
        took = time.monotonic() - started
        for conn in held:
            conn.close()
    assert str(caught.value) == (f"no SSH banner within 1 s: port {port} accepts connections "
                                 f"but no SSH server answers")
    assert took < 10  # bounded by the connect timeout, not paramiko's own defaults


def test_a_closed_port_says_why_and_names_the_host_once(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(HostError) as caught:
        ssh_host(tmp_path, port).connect()
    assert str(caught.value) == f"cannot connect to port {port}: Connection refused"
