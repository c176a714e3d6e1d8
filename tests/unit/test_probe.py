"""toolkit/probe.py, as a host runs it: a fresh interpreter given only its source."""

import json
import socket
import subprocess
import sys
from pathlib import Path

from toolkit.ops import probe


def run_probe(*args: str, python: str = sys.executable) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([python, "-I", "-c", Path(probe.__file__).read_text(), *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_host_reports_python_packages_markers_home_and_busy_ports(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            spare = free.getsockname()[1]
        home = tmp_path / "made" / "home"
        facts = run_probe(str(home), f"127.0.0.1:{port}", f"127.0.0.1:{spare}")
    assert facts["python"] == sys.version.split()[0]
    assert facts["installed"]["msgspec"] == probe.installed()["msgspec"]
    assert facts["environment"]["python_version"] == "{}.{}".format(*sys.version_info[:2])
    assert facts["writable"] is True and home.is_dir()
    assert facts["busy"] == [f"127.0.0.1:{port}"]


def test_without_ember_or_packaging_it_still_reports(tmp_path: Path) -> None:
    """A host before its first deploy: the system python, a bare venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")],
                   check=True)
    facts = run_probe(python=str(tmp_path / "bare" / "bin" / "python"))
    assert facts["toolkit"] is None and facts["environment"] is None
    assert "msgspec" not in facts["installed"]
    assert "writable" not in facts  # no home asked about


def test_an_unwritable_home_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert probe.writable(str(blocker / "home")) is False


def test_a_port_whose_connections_linger_in_time_wait_is_free() -> None:
    """What a just-stopped master leaves behind must not read as 'ports in use'."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ember's servers do
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.close()
    assert probe.busy([f"127.0.0.1:{port}"]) == []
