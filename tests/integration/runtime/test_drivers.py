"""Drivers on a real master and workers: `ember submit`, `ember driver`, supervise, kill, loss."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.procs import Cluster, MasterProc, ember, wait_for

# The keys of Spark 4.x's activedrivers/completeddrivers entries (JsonProtocol.writeDriverInfo).
SPARK_DRIVER_KEYS = ["id", "starttime", "state", "cores", "memory", "resources", "submitdate",
                     "worker", "mainclass"]


def submit(master: MasterProc, *command: str, options: tuple[str, ...] = ()) -> str:
    done = ember("submit", "--master", master.url, *options, "--", *command)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def driver_entry(master: MasterProc, driver_id: str) -> dict[str, Any] | None:
    state = master.json()
    every = state["activedrivers"] + state["completeddrivers"]
    return next((d for d in every if d["id"] == driver_id), None)


def wait_driver(master: MasterProc, driver_id: str, state: str, timeout: float = 15
                ) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        entry = driver_entry(master, driver_id)
        return entry if entry and entry["state"] == state else None
    return wait_for(check, timeout, f"{driver_id} {state}")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_submit_runs_the_command_in_its_dir_and_reports_finished(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="2g")
    worker_id = master.wait_joined(worker)

    done = ember("submit", "--master", master.url, "--wait", "--cores", "2", "--memory", "512m",
                 "--name", "hello", "--env", "GREETING=hi there", "--",
                 "sh", "-c", 'echo "$GREETING"; echo oops >&2; env | grep ^EMBER_ > env.txt')

    assert done.returncode == 0, done.stderr
    driver_id = done.stdout.strip()
    assert driver_id.startswith("driver-") and driver_id.endswith("-0000")
    assert f"{driver_id} FINISHED on {worker_id}" in done.stderr
    directory = worker.work_dir / driver_id
    assert (directory / "stdout").read_text() == "hi there\n"
    stderr = (directory / "stderr").read_text()
    assert stderr.startswith('Launch Command: "sh" "-c" "echo \\"$GREETING\\"'[:24])
    assert stderr.splitlines()[1] == "=" * 40
    assert stderr.endswith("oops\n")
    env = dict(line.split("=", 1) for line in (directory / "env.txt").read_text().splitlines())
    assert env["EMBER_DRIVER_ID"] == driver_id
    assert env["EMBER_MASTER_URL"] == master.url
    assert (env["EMBER_DRIVER_CORES"], env["EMBER_DRIVER_MEMORY"]) == ("2", "512m")

    entry = wait_driver(master, driver_id, "FINISHED")
    assert list(entry) == SPARK_DRIVER_KEYS
    assert (entry["worker"], entry["mainclass"], entry["cores"], entry["memory"]) == (
        worker_id, "hello", 2, 512)
    assert master.json()["activedrivers"] == []
    assert master.worker_entry(worker_id)["coresused"] == 0  # type: ignore[index]

    status = ember("driver", "status", driver_id, "--master", master.url, "--json")
    assert '"state": "FINISHED"' in status.stdout and status.returncode == 0


@pytest.mark.parametrize(("command", "expected", "state"), [
    ("exit 3", 3, "FAILED"),
    ("kill -9 $$", 137, "FAILED"),
    ("exit 0", 0, "FINISHED"),
])
def test_submit_wait_returns_the_drivers_exit_code(cluster: Cluster, command: str,
                                                     expected: int, state: str) -> None:
    master = cluster.master()
    master.wait_joined(cluster.worker(master.url))
    done = ember("submit", "--master", master.url, "--wait", "--memory", "256m", "--",
                 "sh", "-c", command)
    assert done.returncode == expected, done.stderr
    assert f" {state} on " in done.stderr


def test_a_command_that_cannot_start_is_error_and_says_why(cluster: Cluster) -> None:
    master = cluster.master()
    master.wait_joined(cluster.worker(master.url))
    done = ember("submit", "--master", master.url, "--wait", "--memory", "256m", "--",
                 "/nonexistent/program")
    assert done.returncode == 1
    assert "ERROR" in done.stderr and "/nonexistent/program" in done.stderr


def test_supervise_restarts_with_growing_delays_until_killed(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url)
    master.wait_joined(worker)
    stamps = tmp_path / "stamps"
    driver_id = submit(master, "sh", "-c", f"date +%s.%N >> {stamps}; exit 1",
                       options=("--supervise", "--memory", "256m"))

    wait_for(lambda: len(stamps.read_text().split()) >= 3, 15, "three launches")
    times = [float(t) for t in stamps.read_text().split()]
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert 0.9 < first_gap < 1.6
    assert 1.9 < second_gap < 2.8
    assert driver_entry(master, driver_id)["state"] == "RUNNING"  # type: ignore[index]
    stderr = (worker.work_dir / driver_id / "stderr").read_text()
    assert stderr.count("Launch Command:") >= 3
    assert "exited with code 1" in stderr and "restart 2 in 2 s" in stderr

    killed = ember("driver", "kill", driver_id, "--master", master.url)
    assert killed.returncode == 0 and "success=True" in killed.stdout
    wait_driver(master, driver_id, "KILLED", timeout=5)
    launches = len(stamps.read_text().split())
    time.sleep(4.5)
    assert len(stamps.read_text().split()) == launches


def test_kill_escalates_to_sigkill_of_the_process_group(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, "--kill-timeout", "1")
    master.wait_joined(worker)
    driver_id = submit(master, "sh", "-c", 'trap "" TERM; sleep 60 & echo $! > child; wait',
                       options=("--memory", "256m"))
    child_file = worker.work_dir / driver_id / "child"
    child = int(wait_for(lambda: child_file.read_text().strip(), 10, "child pid"))

    began = time.monotonic()
    assert ember("driver", "kill", driver_id, "--master", master.url).returncode == 0
    entry = wait_driver(master, driver_id, "KILLED", timeout=8)
    took = time.monotonic() - began
    assert 0.9 < took < 4, took
    assert entry["worker"] == worker.id
    wait_for(lambda: not alive(child), 3, "the driver's child gone too")
    assert "KILLED" in ember("driver", "list", "--master", master.url).stdout


def test_driver_bigger_than_any_worker_stays_submitted(cluster: Cluster) -> None:
    master = cluster.master()
    master.wait_joined(cluster.worker(master.url, cores=2, memory="1g"))
    too_many_cores = submit(master, "true", options=("--cores", "3", "--memory", "256m"))
    too_much_memory = submit(master, "true", options=("--memory", "2g"))
    fits = submit(master, "true", options=("--memory", "256m"))

    wait_driver(master, fits, "FINISHED")
    time.sleep(0.5)
    for driver_id in (too_many_cores, too_much_memory):
        entry = driver_entry(master, driver_id)
        assert entry is not None
        assert (entry["state"], entry["worker"]) == ("SUBMITTED", "None")
    killed = ember("driver", "kill", too_many_cores, "--master", master.url)
    assert killed.returncode == 0
    wait_driver(master, too_many_cores, "KILLED")

    bigger = cluster.worker(master.url, cores=4, memory="4g")
    master.wait_joined(bigger)
    wait_driver(master, too_much_memory, "FINISHED")


def test_worker_killed_supervised_driver_relaunched_elsewhere_other_is_error(
        cluster: Cluster) -> None:
    master = cluster.master()
    first = cluster.worker(master.url, cores=2, memory="1g")
    first_id = master.wait_joined(first)
    supervised = submit(master, "sh", "-c", "echo $$ > pid; exec sleep 60",
                        options=("--supervise", "--memory", "256m"))
    plain = submit(master, "sh", "-c", "echo $$ > pid; exec sleep 60",
                   options=("--memory", "256m"))
    wait_driver(master, supervised, "RUNNING")
    pid_files = [first.work_dir / d / "pid" for d in (supervised, plain)]
    orphans = [int(wait_for(lambda f=f: f.read_text().strip(), 10, f"{f}")) for f in pid_files]
    second = cluster.worker(master.url, cores=2, memory="1g")
    second_id = master.wait_joined(second)

    try:
        first.proc.signal(signal.SIGKILL)
        old = wait_driver(master, supervised, "RELAUNCHING")
        assert old["worker"] == first_id
        wait_driver(master, plain, "ERROR")
        status = ember("driver", "status", supervised, "--master", master.url).stdout
        new_id = status.split("relaunched_as=")[1].split()[0]
        new = wait_driver(master, new_id, "RUNNING")
        assert new["worker"] == second_id and new_id != supervised
        wait_for(lambda: (second.work_dir / new_id / "pid").exists(), 10, "relaunched process")
        # Spark leaves a killed worker's drivers running; Ember's get SIGTERM (pdeathsig).
        wait_for(lambda: not any(alive(pid) for pid in orphans), 5, "old processes gone")
    finally:
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_restarted_master_has_the_worker_kill_the_driver_it_does_not_know(
        cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url)
    master.wait_joined(worker)
    driver_id = submit(master, "sh", "-c", "echo $$ > pid; exec sleep 60",
                       options=("--memory", "256m"))
    pid = int(wait_for(lambda: (worker.work_dir / driver_id / "pid").read_text().strip(), 10,
                       "driver pid"))

    master.proc.stop()
    restarted = cluster.master(port=master.port)
    wait_for(lambda: not alive(pid), 15, "unknown driver killed after re-registration")
    assert restarted.json()["activedrivers"] == []
    assert f"runs unknown driver {driver_id}; killing it" in restarted.proc.log()


def test_finished_driver_dirs_are_cleaned_after_the_ttl(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, "--cleanup-interval", "0.5", "--cleanup-ttl", "1.5")
    master.wait_joined(worker)
    finished = submit(master, "true", options=("--memory", "256m"))
    running = submit(master, "sleep", "30", options=("--memory", "256m"))
    stranger = worker.work_dir / "notes"
    stranger.mkdir()
    # EMBER_WORKER_DIR=/srv: /srv/app-data is an operator's, however old, never Ember's
    foreign = worker.work_dir / "app-data"
    (foreign / "keep").mkdir(parents=True)
    for path in (foreign / "keep", foreign):
        os.utime(path, (time.time() - 30 * 86400,) * 2)

    wait_driver(master, finished, "FINISHED")
    assert (worker.work_dir / finished).is_dir()
    wait_for(lambda: not (worker.work_dir / finished).exists(), 10, "finished dir removed")
    time.sleep(0.6)
    assert (worker.work_dir / running).is_dir()
    assert stranger.is_dir() and (foreign / "keep").is_dir()


def test_submit_errors_name_the_problem(cluster: Cluster) -> None:
    master = cluster.master()
    no_command = ember("submit", "--master", master.url)
    assert no_command.returncode == 2 and "needs a command" in no_command.stderr
    bad_memory = ember("submit", "--master", master.url, "--memory", "512", "--", "true")
    assert bad_memory.returncode == 2 and "--memory" in bad_memory.stderr
    bad_env = ember("submit", "--master", master.url, "--env", "NOEQUALS", "--", "true")
    assert bad_env.returncode == 2 and "NOEQUALS" in bad_env.stderr
    nobody = ember("submit", "--master", "ember://127.0.0.1:1", "--", "true")
    assert nobody.returncode == 1 and "127.0.0.1:1" in nobody.stderr
    unknown = ember("driver", "status", "driver-x", "--master", master.url)
    assert unknown.returncode == 1 and "not found" in unknown.stdout


def test_the_rest_of_the_group_gets_the_kill_timeout_to_finish(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, "--kill-timeout", "5")
    master.wait_joined(worker)
    child = ("import signal, sys, time\n"
             "def bye(*_):\n"
             "    time.sleep(1); open('done', 'w').write('cleaned up'); sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, bye)\n"
             "open('ready', 'w').close()\n"
             "time.sleep(60)\n")
    driver_id = submit(master, "sh", "-c", f'{sys.executable} -c "$0" & wait', child,
                       options=("--memory", "64m"))
    directory = worker.work_dir / driver_id
    wait_for(lambda: (directory / "ready").exists(), 10, "the child ready")

    assert ember("driver", "kill", driver_id, "--master", master.url).returncode == 0
    wait_driver(master, driver_id, "KILLED", timeout=8)
    assert (directory / "done").read_text() == "cleaned up"


def test_a_watched_drivers_updates_are_not_taken_as_the_answer_to_another_request(
        cluster: Cluster) -> None:
    import asyncio

    from toolkit.runtime import messages as m
    from toolkit.runtime.client import SubmissionClient

    master = cluster.master()
    master.wait_joined(cluster.worker(master.url))

    async def scenario() -> tuple[m.DriverStatusResponse, list[str | None]]:
        async with await SubmissionClient.open(master.url) as client:
            submitted = await client.submit(m.DriverDescription(["true"], memory=64), watch=True)
            assert submitted.success and submitted.driver_id
            # let the watched driver's updates (RUNNING, FINISHED) arrive before asking
            deadline = time.monotonic() + 15
            while client.inbox.qsize() < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            other = await client.status("driver-20200101000000-9999")
            updates = [(await client.next_status(10)).state for _ in range(2)]
            return other, updates

    other, updates = asyncio.run(scenario())
    assert (other.driver_id, other.found) == ("driver-20200101000000-9999", False)
    assert updates == ["RUNNING", "FINISHED"]  # none swallowed by the status() call


def test_a_jobs_work_dir_and_output_are_its_users_alone(cluster: Cluster) -> None:
    """Not world-readable: another local user reads no job's files, output or --env echo."""
    import asyncio

    from tests.integration.runtime.test_applications import two_running_executors

    master = cluster.master()
    worker = cluster.worker(master.url, cores=3, memory="1g")
    master.wait_joined(worker)
    driver = submit(master, "sh", "-c", "echo private", options=("--memory", "64m"))
    wait_driver(master, driver, "FINISHED")

    async def app_dir() -> str:
        app, _ = await two_running_executors(master.url, worker.work_dir)
        await app.stop()
        return app.app_id

    app_id = asyncio.run(app_dir())
    for path in (worker.work_dir / driver, worker.work_dir / app_id,
                 worker.work_dir / app_id / "0"):
        assert (path.stat().st_mode & 0o777) == 0o700, path
    for path in (worker.work_dir / driver / "stdout", worker.work_dir / app_id / "0" / "stderr"):
        assert (path.stat().st_mode & 0o777) == 0o600, path
    assert (worker.work_dir / driver / "stdout").read_text() == "private\n"


def test_a_name_cannot_forge_log_lines(cluster: Cluster) -> None:
    master = cluster.master()
    forged = "2026-12-01 00:00:00,000 ERROR endpoint: forged"
    submitted = ember("submit", "--master", master.url, "--name", f"evil\n{forged}\x1b[2J",
                      "--", "true")
    assert submitted.returncode == 0, submitted.stderr
    wait_for(lambda: "evil\\n2026" in master.proc.log(), 5, "the submission logged")
    log = master.proc.log()
    assert not any(line.startswith(forged) for line in log.splitlines())
    assert "\x1b" not in log and "\\x1b[2J" in log
