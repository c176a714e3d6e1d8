"""Filesystem recovery on real processes: a master killed with SIGKILL and started again on its
directory, or a standby on the same directory, takes over the cluster without losing work."""

from __future__ import annotations

import signal
import urllib.error
from pathlib import Path
from typing import Any

from tests.integration.runtime.test_drivers import alive, submit, wait_driver
from tests.procs import Cluster, MasterProc, ember, free_port, get_json, wait_for

RUNS = "echo $$ > pid; exec sleep 60"


def recovering(cluster: Cluster, directory: Path, port: int, wait: bool = True) -> MasterProc:
    return cluster.master("--recovery-mode", "filesystem", "--recovery-dir", str(directory),
                          port=port, wait=wait)


def leader_and_standby(cluster: Cluster, tmp_path: Path) -> tuple[MasterProc, MasterProc]:
    """Two masters on one recovery directory: the first leads, the second stands by."""
    directory = tmp_path / "recovery"
    leader = recovering(cluster, directory, free_port())
    standby = recovering(cluster, directory, free_port(), wait=False)
    wait_for(lambda: "standing by" in standby.proc.log(), 15, "the standby waiting")
    return leader, standby


def drivers_of(master: MasterProc) -> dict[str, str]:
    state = master.json()
    return {d["id"]: d["state"] for d in state["activedrivers"] + state["completeddrivers"]}


def test_a_restarted_master_keeps_running_waiting_and_finished_drivers(
        cluster: Cluster, tmp_path: Path) -> None:
    directory, port = tmp_path / "recovery", free_port()
    first = recovering(cluster, directory, port)
    worker = cluster.worker(first.url, cores=1, memory="1g")
    worker_id = first.wait_joined(worker)
    done = submit(first, "true", options=("--memory", "64m"))
    wait_driver(first, done, "FINISHED")
    running = submit(first, "sh", "-c", RUNS, options=("--memory", "64m"))
    wait_driver(first, running, "RUNNING")
    pid_file = worker.work_dir / running / "pid"
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "pid"))
    waiting = submit(first, "true", options=("--memory", "64m"))  # no core left: it waits

    first.proc.signal(signal.SIGKILL)
    first.proc.wait()
    second = recovering(cluster, directory, port)

    second.wait_state(worker_id, "ALIVE")
    wait_for(lambda: second.json()["status"] == "ALIVE", 15, "recovery complete")
    assert drivers_of(second) == {done: "FINISHED", running: "RUNNING", waiting: "SUBMITTED"}
    assert alive(pid) and pid_file.read_text().strip() == str(pid)  # the same process
    assert "Recovered 1 workers, 2 drivers (1 waiting) and 1 completed drivers" in (
        second.proc.log())
    # and the cluster goes on: once the running driver ends, the waiting one gets its core
    assert ember("driver", "kill", running, "--master", second.url).returncode == 0
    wait_driver(second, running, "KILLED")
    wait_driver(second, waiting, "FINISHED")


def test_a_standby_on_the_same_directory_leads_when_the_leader_dies(
        cluster: Cluster, tmp_path: Path) -> None:
    leader, standby = leader_and_standby(cluster, tmp_path)
    wait_for(lambda: standby.json()["status"] == "STANDBY", 15, "the standby's /json")
    try:
        get_json(f"http://127.0.0.1:{standby.webui}/readyz")
        raise AssertionError("a standby must not say it is ready")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
    both = f"ember://127.0.0.1:{leader.port},127.0.0.1:{standby.port}"
    worker = cluster.worker(both, cores=1, memory="1g")
    worker_id = leader.wait_joined(worker)
    running = submit(leader, "sh", "-c", RUNS, options=("--memory", "64m"))
    wait_driver(leader, running, "RUNNING")
    assert standby.json()["status"] == "STANDBY"  # never two leaders

    leader.proc.signal(signal.SIGKILL)
    wait_for(lambda: standby.json()["status"] == "ALIVE", 20, "the standby leading")
    standby.wait_state(worker_id, "ALIVE")
    state: dict[str, Any] = standby.json()
    assert [(d["id"], d["state"]) for d in state["activedrivers"]] == [(running, "RUNNING")]


def test_ember_submit_finds_the_leader_and_follows_its_driver_across_a_failover(
        cluster: Cluster, tmp_path: Path) -> None:
    import subprocess
    import sys

    leader, standby = leader_and_standby(cluster, tmp_path)
    both = f"ember://127.0.0.1:{standby.port},127.0.0.1:{leader.port}"  # the standby first
    worker = cluster.worker(both, cores=1, memory="1g")
    leader.wait_joined(worker)

    waiting = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "submit", "--master", both, "--wait", "--memory",
         "64m", "--", "sh", "-c", "sleep 4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        driver_id = wait_for(lambda: next((d["id"] for d in leader.json()["activedrivers"]
                                           if d["state"] == "RUNNING"), None), 15, "running")
        leader.proc.signal(signal.SIGKILL)  # the leader goes while ember submit waits
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert out.split() == [driver_id]  # one driver, never a second
    assert f"{driver_id} FINISHED" in err and "following driver" in err
    assert drivers_of(standby) == {driver_id: "FINISHED"}


def test_an_application_and_its_executors_come_back_to_a_restarted_master(
        cluster: Cluster, tmp_path: Path) -> None:
    import asyncio

    from tests.integration.runtime.test_applications import two_running_executors

    directory, port = tmp_path / "recovery", free_port()
    first = recovering(cluster, directory, port)
    worker = cluster.worker(first.url, cores=2, memory="1g")
    first.wait_joined(worker)

    async def scenario() -> tuple[str, dict[int, int], dict[str, Any]]:
        app, pids = await two_running_executors(first.url, worker.work_dir)
        try:
            first.proc.signal(signal.SIGKILL)
            following = asyncio.ensure_future(app.event())  # notices, and goes back
            second = await asyncio.to_thread(recovering, cluster, directory, port)
            state = await asyncio.to_thread(wait_for, lambda: (
                second.json() if second.json()["status"] == "ALIVE" else None), 20,
                "recovery complete")
            following.cancel()
            return app.app_id, pids, state
        finally:
            await app.stop()

    app_id, pids, state = asyncio.run(scenario())
    assert [(a["id"], a["state"]) for a in state["activeapps"]] == [(app_id, "RUNNING")]
    assert all(alive(pid) for pid in pids.values())  # the same executors, never restarted
    executors = sorted(p.name for p in (worker.work_dir / app_id).iterdir())
    assert executors == ["0", "1"]


def test_the_web_ui_lists_the_masters_on_the_directory_and_which_leads(
        cluster: Cluster, tmp_path: Path) -> None:
    import urllib.request

    def page(master: MasterProc) -> str:
        with urllib.request.urlopen(master.ui + "/", timeout=5) as response:
            return str(response.read().decode())

    leader, standby = leader_and_standby(cluster, tmp_path)
    both = f"127.0.0.1:{leader.port} (leading), 127.0.0.1:{standby.port} (standby)"
    for master, state in ((leader, "ALIVE"), (standby, "STANDBY")):
        found = wait_for(lambda m=master: page(m) if both in page(m) else None, 10,
                         "both masters listed")
        assert f'id="status">{state}<' in found
    leader.proc.signal(signal.SIGKILL)  # its file stays behind, its lock goes with it
    wait_for(lambda: standby.json()["status"] == "ALIVE", 20, "the standby leading")
    alone = f'id="masters">127.0.0.1:{standby.port} (leading)</span>'
    wait_for(lambda: alone in page(standby), 10, "only the living master listed")
