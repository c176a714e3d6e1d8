"""ZooKeeper recovery on real processes: a real ZooKeeper server (Debian's zookeeper package,
run standalone on a free port), a leader and a standby."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.runtime.test_drivers import submit, wait_driver
from tests.procs import Cluster, MasterProc, free_port, wait_for

JAR = Path("/usr/share/java/zookeeper.jar")
RUNS = "echo $$ > pid; exec sleep 60"


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"srvr")
            return b"Mode: standalone" in sock.recv(4096)
    except OSError:
        return False


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    if not JAR.exists() or shutil.which("java") is None:
        pytest.skip("needs ZooKeeper and Java: scripts/test installs Debian's zookeeper")
    port = free_port()
    data = tmp_path / "zookeeper"
    data.mkdir()
    with open(tmp_path / "zookeeper.log", "wb") as log:
        server = subprocess.Popen(
            ["java", "-Dzookeeper.admin.enableServer=false", "-Dzookeeper.4lw.commands."
             "whitelist=srvr", "-cp", str(JAR), "org.apache.zookeeper.server.ZooKeeperServerMain",
             str(port), str(data), "2000"],  # tickTime as Debian's zoo.cfg: 4 s sessions
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: answers(port), 30, "ZooKeeper answering")
        yield port, server
    finally:
        server.kill()
        server.wait()


def with_zookeeper(cluster: Cluster, port: int, wait: bool = True) -> MasterProc:
    return cluster.master("--recovery-mode", "zookeeper", "--zookeeper-url",
                          f"127.0.0.1:{port}", "--zookeeper-dir", "/ember-test", wait=wait)


def test_a_standby_leads_when_the_leader_dies_and_keeps_its_work(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, _ = zookeeper
    leader = with_zookeeper(cluster, port)
    wait_for(lambda: leader.json()["status"] == "ALIVE", 15, "the leader")
    standby = with_zookeeper(cluster, port, wait=False)
    wait_for(lambda: "standing by" in standby.proc.log(), 15, "the standby waiting")
    both = f"ember://127.0.0.1:{leader.port},127.0.0.1:{standby.port}"
    worker = cluster.worker(both, cores=1, memory="1g")
    worker_id = leader.wait_joined(worker)
    running = submit(leader, "sh", "-c", RUNS, options=("--memory", "64m"))
    wait_driver(leader, running, "RUNNING")
    assert standby.json()["status"] == "STANDBY"  # never two leaders

    leader.proc.signal(signal.SIGKILL)  # its session expires: its lock goes with it
    wait_for(lambda: standby.json()["status"] == "ALIVE", 30, "the standby leading")
    standby.wait_state(worker_id, "ALIVE")
    active = standby.json()["activedrivers"]
    assert [(d["id"], d["state"]) for d in active] == [(running, "RUNNING")]


def test_a_leader_cut_off_from_zookeeper_steps_down_with_exit_1(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, server = zookeeper
    leader = with_zookeeper(cluster, port)
    wait_for(lambda: leader.json()["status"] == "ALIVE", 15, "the leader")
    server.send_signal(signal.SIGKILL)
    assert leader.proc.wait(30) == 1  # non-zero: its supervisor starts it again, a standby
    assert "Lost the ZooKeeper session of the leader" in leader.proc.log()
