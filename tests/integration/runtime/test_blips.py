"""A worker's link to the master reset on the way (a blip): nothing is killed, relaunched or
put in ERROR, and the same processes keep running under the same ids. Real processes; the
reset is the kernel's own (`ss -K`, as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.runtime.test_drivers import alive, driver_entry, submit, wait_driver
from tests.procs import Cluster, wait_for

RUNS = 'echo $$ > pid; exec sleep 60'


def reset_links_to(port: int) -> None:
    """Abort every TCP connection to ``port`` on this machine: both ends see a reset."""
    done = subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ss") is None,
                    reason="resetting a TCP connection (ss -K) needs root and iproute2")
def test_a_reset_link_keeps_every_driver_running_as_it_was(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="1g")
    master.wait_joined(worker)
    plain = submit(master, "sh", "-c", RUNS, options=("--memory", "64m"))
    supervised = submit(master, "sh", "-c", RUNS, options=("--memory", "64m", "--supervise"))
    pids = {}
    for driver_id in (plain, supervised):
        wait_driver(master, driver_id, "RUNNING")
        pid_file = worker.work_dir / driver_id / "pid"
        pids[driver_id] = int(wait_for(lambda f=pid_file: f.exists() and f.read_text().strip(),
                                       10, f"{driver_id} pid"))

    reset_links_to(master.port)
    wait_for(lambda: worker.proc.log().count("Successfully registered") == 2, 15,
             "the worker registered again")
    time.sleep(1)  # what the master would do about it (kill, relaunch) has happened by now

    state = master.json()
    assert [d["id"] for d in state["activedrivers"]] == [plain, supervised]
    assert all(d["state"] == "RUNNING" for d in state["activedrivers"])
    assert state["completeddrivers"] == []  # none ERROR, KILLED or RELAUNCHING
    for driver_id, pid in pids.items():
        assert alive(pid), f"{driver_id} was killed"
        assert (worker.work_dir / driver_id / "pid").read_text().strip() == str(pid)
    assert sorted(p.name for p in Path(worker.work_dir).iterdir()
                  if p.name.startswith("driver-")) == sorted(pids)  # nothing relaunched
    assert driver_entry(master, plain)["worker"] == state["workers"][0]["id"]  # type: ignore[index]
    assert state["aliveworkers"] == 1
    assert "(re-registration)" in worker.proc.log() and "was reset" in master.proc.log()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ss") is None,
                    reason="resetting a TCP connection (ss -K) needs root and iproute2")
def test_a_reset_link_keeps_an_application_and_its_executors(cluster: Cluster) -> None:
    import asyncio

    from tests.integration.runtime.test_applications import two_running_executors

    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="1g")
    master.wait_joined(worker)

    async def scenario() -> tuple[str, dict[int, int]]:
        app, pids = await two_running_executors(master.url, worker.work_dir)
        try:
            following = asyncio.ensure_future(app.event())  # notices, and comes back
            reset_links_to(master.port)
            await asyncio.to_thread(wait_for, lambda: f"Application {app.app_id} is back" in (
                master.proc.log()), 15, "the application back")
            following.cancel()
            return app.app_id, pids
        finally:
            await app.stop()

    app_id, pids = asyncio.run(scenario())
    assert all(alive(pid) for pid in pids.values())  # never killed, never restarted
    assert sorted(p.name for p in (worker.work_dir / app_id).iterdir()) == ["0", "1"]
    assert "was reset; waiting for its driver program" in master.proc.log()
