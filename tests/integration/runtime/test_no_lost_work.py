"""No lost work across a failover, the whole picture at once: on the cluster, 2 supervised and
2 plain drivers running, 2 waiting, and an application with executors; kill -9 of the
leading master. The new leader has every worker and the application back, every process
keeps its pid, every id is known, and the waiting drivers get placed once there is room.

Two ways: ZooKeeper recovery with a standby taking over; filesystem recovery with one master
under supervisord, which starts it again."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from tests.integration.runtime.test_applications import (
    SLEEPER,
    app_desc,
    events_until,
    updates,
)
from tests.integration.runtime.test_drivers import alive, submit, wait_driver
from tests.integration.runtime.test_zookeeper import two_masters, zookeeper  # noqa: F401
from tests.procs import Cluster, MasterProc, WorkerProc, ember, free_port, wait_for
from toolkit.runtime.client import ApplicationClient

RUNS = "echo $$ > pid; exec sleep 120"


def driver_pid(workers: list[WorkerProc], driver_id: str) -> int:
    found = [w.work_dir / driver_id / "pid" for w in workers]
    path = wait_for(lambda: next((p for p in found if p.exists() and p.read_text().strip()),
                                 None), 10, f"{driver_id}'s pid")
    return int(path.read_text())


def fail_over(cluster: Cluster, leader: MasterProc, url: str, kill: Callable[[], None],
              successor: Callable[[], MasterProc]) -> None:
    """The scenario, from a leader with nothing on it to the waiting drivers placed."""
    workers = [cluster.worker(url, cores=3, memory="2g") for _ in range(2)]
    worker_ids = sorted(leader.wait_joined(w) for w in workers)
    supervised = [submit(leader, "sh", "-c", RUNS, options=("--supervise", "--memory", "64m"))
                  for _ in range(2)]
    plain = [submit(leader, "sh", "-c", RUNS, options=("--memory", "64m")) for _ in range(2)]
    for driver in supervised + plain:
        wait_driver(leader, driver, "RUNNING")
    pids = {d: driver_pid(workers, d) for d in supervised + plain}

    async def scenario() -> tuple[MasterProc, list[str], dict[str, Any]]:
        app = await ApplicationClient.register(app_desc(SLEEPER, cores_per_executor=1,
                                                        max_cores=2), url)
        try:
            await events_until(app, lambda seen: len(updates(seen, "RUNNING")) == 2)
            executors = {f"{app.app_id}/{n}": driver_pid(workers, f"{app.app_id}/{n}")
                         for n in (0, 1)}
            waiting = [await asyncio.to_thread(submit, leader, "true", options=(
                "--memory", "64m")) for _ in range(2)]  # every core is taken: they wait
            kill()
            following = asyncio.ensure_future(app.event())  # notices, and goes back
            new = await asyncio.to_thread(successor)
            await asyncio.to_thread(wait_for, lambda: (lambda st: st["status"] == "ALIVE" and [
                a["state"] for a in st["activeapps"]] == ["RUNNING"])(new.json()), 60,
                "the new leader ALIVE with the application back")
            following.cancel()
            # the same executors, never restarted
            assert all(alive(pid) for pid in executors.values())
            return new, waiting, new.json()  # with the application still on
        finally:
            await app.stop()

    new, waiting, state = asyncio.run(scenario())
    assert sorted(w["id"] for w in state["workers"] if w["state"] == "ALIVE") == worker_ids
    drivers = {d["id"]: d["state"] for d in state["activedrivers"]}
    assert drivers == {**{d: "RUNNING" for d in supervised + plain},
                       **{d: "SUBMITTED" for d in waiting}}
    assert all(alive(pid) and driver_pid(workers, d) == pid for d, pid in pids.items())
    assert [(a["state"], a["cores"]) for a in state["activeapps"]] == [("RUNNING", 2)]
    # room again: the waiting drivers are placed by the new leader, and run
    for driver in plain:
        killed = ember("driver", "kill", driver, "--master", url)
        assert killed.returncode == 0, killed.stdout + killed.stderr
    for driver in waiting:
        wait_driver(new, driver, "FINISHED", timeout=30)


def test_a_standby_takes_over_with_every_driver_application_and_worker(
        cluster: Cluster, zookeeper: tuple[int, subprocess.Popen[bytes]]) -> None:  # noqa: F811
    leader, standby, url = two_masters(cluster, zookeeper)
    fail_over(cluster, leader, url, lambda: leader.proc.signal(signal.SIGKILL),
              lambda: standby)


def test_a_master_restarted_by_supervisord_keeps_every_driver_application_and_worker(
        cluster: Cluster, tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="enl-", dir="/tmp"))  # supervisor's socket path
    port, webui = free_port(), free_port()
    env = {**os.environ, "EMBER_HOME": str(tmp_path / "home"), "EMBER_SUPERVISOR_DIR": str(short),
           "EMBER_IDENT_STRING": "nlw", "EMBER_DAEMON_BACKEND": "supervisor",
           "EMBER_MASTER_HOST": "127.0.0.1", "EMBER_MASTER_PORT": str(port),
           "EMBER_MASTER_WEBUI_PORT": str(webui), "EMBER_RECOVERY_MODE": "filesystem",
           "EMBER_RECOVERY_DIR": str(tmp_path / "recovery")}

    def daemon(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "toolkit", "daemon", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    pid_file = tmp_path / "home" / "run" / "ember-nlw-master-1.pid"
    try:
        started = daemon("start", "master", "--", "--insecure")  # as Cluster's workers are
        assert started.returncode == 0, started.stdout + started.stderr
        master = MasterProc(cast(Any, None), port, webui)
        first = int(pid_file.read_text())

        def restarted() -> MasterProc:  # supervisord starts it again, on the same port
            wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() not in (
                "", str(first)), 30, "supervisord starting the master again")
            return master

        fail_over(cluster, master, master.url, lambda: os.kill(first, signal.SIGKILL),
                  restarted)
        assert alive(int(pid_file.read_text()))
    finally:
        daemon("stop", "master", "--shutdown-supervisor")
        shutil.rmtree(short, ignore_errors=True)
