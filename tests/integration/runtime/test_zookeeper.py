"""ZooKeeper recovery on real processes: a real ZooKeeper server (Debian's zookeeper package,
run standalone on a free port), a leader and a standby."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.runtime.test_drivers import alive, submit, wait_driver
from tests.procs import Cluster, MasterProc, WorkerProc, free_port, wait_for

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


def two_masters(cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]
                ) -> tuple[MasterProc, MasterProc, str]:
    """A leader and a standby on ZooKeeper, and the URL of both."""
    port, _ = zookeeper
    leader = with_zookeeper(cluster, port)
    wait_for(lambda: leader.json()["status"] == "ALIVE", 15, "the leader")
    standby = with_zookeeper(cluster, port, wait=False)
    wait_for(lambda: "standing by" in standby.proc.log(), 15, "the standby waiting")
    return leader, standby, f"ember://127.0.0.1:{leader.port},127.0.0.1:{standby.port}"


def leader_and_standby(cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]],
                       cores: int) -> tuple[MasterProc, MasterProc, WorkerProc, str, str]:
    """A leader and a standby on ZooKeeper, a worker that knows both, a driver RUNNING."""
    leader, standby, both = two_masters(cluster, zookeeper)
    worker = cluster.worker(both, cores=cores, memory="1g")
    worker_id = leader.wait_joined(worker)
    running = submit(leader, "sh", "-c", RUNS, options=("--memory", "64m"))
    wait_driver(leader, running, "RUNNING")
    return leader, standby, worker, worker_id, running


def test_a_standby_leads_when_the_leader_dies_and_keeps_its_work(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    leader, standby, _, worker_id, running = leader_and_standby(cluster, zookeeper, 1)
    assert standby.json()["status"] == "STANDBY"  # never two leaders

    leader.proc.signal(signal.SIGKILL)
    wait_for(lambda: standby.json()["status"] == "ALIVE", 30, "the standby leading")
    standby.wait_state(worker_id, "ALIVE")
    active = standby.json()["activedrivers"]
    assert [(d["id"], d["state"]) for d in active] == [(running, "RUNNING")]
    # its port refused: the standby took the dead leader's lock, not waiting for its session
    assert f"The leader at 127.0.0.1:{leader.port} refuses connections" in standby.proc.log()


def test_a_frozen_leader_is_left_to_its_session_and_its_work_follows_the_new_one(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    """A leader that stops answering (frozen, or cut off with its connections still up: no
    reset ever comes) still accepts connections: only ZooKeeper's session expiry hands its
    lock on. The new leader tells the workers itself; the application's driver program
    notices that its master no longer answers and follows. Woken, the old one exits 1."""
    import asyncio

    from tests.integration.runtime.test_applications import two_running_executors

    leader, standby, worker, worker_id, running = leader_and_standby(cluster, zookeeper, 3)
    both = f"ember://127.0.0.1:{leader.port},127.0.0.1:{standby.port}"

    async def scenario() -> tuple[str, dict[int, int], dict[str, Any]]:
        app, pids = await two_running_executors(both, worker.work_dir)
        try:
            leader.proc.signal(signal.SIGSTOP)
            following = asyncio.ensure_future(app.event())  # notices, and goes back
            state = await asyncio.to_thread(wait_for, lambda: (lambda now: now if (
                now["status"] == "ALIVE" and [a["state"] for a in now["activeapps"]]
                == ["RUNNING"]) else None)(standby.json()), 40, "the standby leading")
            following.cancel()
            return app.app_id, pids, state
        finally:
            leader.proc.signal(signal.SIGCONT)
            await app.stop()

    app_id, pids, state = asyncio.run(scenario())
    assert [w["id"] for w in state["workers"] if w["state"] == "ALIVE"] == [worker_id]
    assert [(d["id"], d["state"]) for d in state["activedrivers"]] == [(running, "RUNNING")]
    assert [a["id"] for a in state["activeapps"]] == [app_id]
    assert all(alive(pid) for pid in pids.values())  # the same executors, never restarted
    assert leader.proc.wait(30) == 1  # its session expired while it slept
    assert "refuses connections" not in standby.proc.log()
    assert "No longer the leader" in leader.proc.log()
    assert "leads now; registering with it" in worker.proc.log()


@contextmanager
def zookeeper_client(port: int) -> Iterator[Any]:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=f"127.0.0.1:{port}")
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()


def test_a_deposed_leader_records_nothing_more_and_exits_1(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    """Its lock node removed behind its back (as a standby does to a leader whose port
    refuses): every write is fenced on that node, and the leader steps down at once."""
    from toolkit.errors import FatalError
    from toolkit.runtime.master.store import StoredWorker
    from toolkit.runtime.master.zookeeper import ZooKeeperStore

    port, _ = zookeeper
    store = ZooKeeperStore(f"127.0.0.1:{port}", "/ember-fenced")
    lost: list[str] = []
    store.on_lost = lost.append
    try:
        with zookeeper_client(port) as other:
            wait_for(store.try_lead, 10, "the lock taken")
            record = StoredWorker("worker-1", "10.0.0.1", 7078, 2, 1024, "http://10.0.0.1:8081")
            store._put("worker", "worker-1", record)
            (node,) = other.get_children("/ember-fenced/leader")
            other.delete(f"/ember-fenced/leader/{node}")
            with pytest.raises(FatalError, match=r"lock .* is gone"):
                store._put("worker", "worker-2", record)
            assert other.exists("/ember-fenced/worker/worker-1") is not None
            assert other.exists("/ember-fenced/worker/worker-2") is None
            wait_for(lambda: bool(lost), 10, "the lost lock noticed")
            assert "is gone" in lost[0]
    finally:
        store.client.stop()

    leader = with_zookeeper(cluster, port)  # a whole master: it exits 1
    wait_for(lambda: leader.json()["status"] == "ALIVE", 15, "the leader")
    with zookeeper_client(port) as other:
        (node,) = other.get_children("/ember-test/leader")
        other.delete(f"/ember-test/leader/{node}")
    assert leader.proc.wait(30) == 1
    assert "No longer the leader: its lock" in leader.proc.log()


def test_a_leader_cut_off_from_zookeeper_steps_down_with_exit_1(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, server = zookeeper
    leader = with_zookeeper(cluster, port)
    wait_for(lambda: leader.json()["status"] == "ALIVE", 15, "the leader")
    server.send_signal(signal.SIGKILL)
    assert leader.proc.wait(30) == 1  # non-zero: its supervisor starts it again, a standby
    assert "No longer the leader: cut off from ZooKeeper" in leader.proc.log()


def test_a_corrupt_record_in_zookeeper_is_named_and_skipped(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, _ = zookeeper
    with zookeeper_client(port) as client:
        client.create("/ember-test/driver/driver-20261201000000-0007", b'{"id": "driver-2',
                      makepath=True)
    leader = with_zookeeper(cluster, port)
    wait_for(lambda: leader.json()["status"] == "ALIVE", 15, "the master leading anyway")
    assert ("Skipping the unreadable recovery record driver driver-20261201000000-0007 in "
            f"zookeeper 127.0.0.1:{port}/ember-test") in leader.proc.log()
    assert leader.json()["activedrivers"] == []


def test_the_web_ui_shows_which_master_leads_and_which_stand_by(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:
    import urllib.request

    leader, standby, _ = two_masters(cluster, zookeeper)
    expected = (f"127.0.0.1:{leader.port} (leading), 127.0.0.1:{standby.port} (standby)")
    for master, state in ((leader, "ALIVE"), (standby, "STANDBY")):
        def page(ui: str = master.ui) -> str:
            with urllib.request.urlopen(ui + "/", timeout=5) as response:
                return str(response.read().decode())
        found = wait_for(lambda p=page: p() if expected in p() else None, 10, "both masters")
        assert f'id="status">{state}<' in found
