"""Applications and executors on a real master and workers, through the application client."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.procs import Cluster, MasterProc, ember, wait_for
from toolkit.runtime import messages as m
from toolkit.runtime.client import ApplicationClient

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pi.py"
SLEEPER = ["sh", "-c", "echo $$ > pid; exec sleep 60"]
# The keys of Spark 4.x's activeapps/completedapps entries (JsonProtocol.writeApplicationInfo).
SPARK_APP_KEYS = ["id", "starttime", "name", "cores", "user", "memoryperexecutor",
                  "memoryperslave", "resourcesperexecutor", "resourcesperslave", "submitdate",
                  "state", "duration"]


def app_desc(command: list[str], **kw: Any) -> m.ApplicationDescription:
    return m.ApplicationDescription(name=kw.pop("name", "test-app"), command=command,
                                    memory_per_executor=kw.pop("memory", 128), **kw)


@asynccontextmanager
async def registered(master: MasterProc, desc: m.ApplicationDescription
                     ) -> AsyncIterator[ApplicationClient]:
    app = await ApplicationClient.register(desc, master.url)
    try:
        yield app
    finally:
        await app.stop()


async def events_until(app: ApplicationClient, done: Any, timeout: float = 15
                       ) -> list[m.Message]:
    """Collect events until ``done(events)`` is true."""
    seen: list[m.Message] = []
    async with asyncio.timeout(timeout):
        while not done(seen):
            seen.append(await app.event())
    return seen


async def two_running_executors(url: str, work_dir: Path) -> tuple[ApplicationClient,
                                                                     dict[int, int]]:
    """An application with two executors RUNNING (SLEEPER), and their pids by executor id."""
    app = await ApplicationClient.register(
        app_desc(SLEEPER, cores_per_executor=1, max_cores=2), url)
    await events_until(app, lambda seen: sum(
        isinstance(e, m.ExecutorUpdated) and e.state == "RUNNING" for e in seen) == 2)
    folder = work_dir / app.app_id
    pids = {n: int(wait_for(lambda n=n: (folder / str(n) / "pid").exists() and (
        folder / str(n) / "pid").read_text().strip(), 10, "pid")) for n in (0, 1)}
    return app, pids


def added(events: list[m.Message]) -> list[m.ExecutorAdded]:
    return [e for e in events if isinstance(e, m.ExecutorAdded)]


def updates(events: list[m.Message], state: str) -> list[m.ExecutorUpdated]:
    return [e for e in events if isinstance(e, m.ExecutorUpdated) and e.state == state]


def app_entry(master: MasterProc, app_id: str) -> dict[str, Any] | None:
    state = master.json()
    return next((a for a in state["activeapps"] + state["completedapps"] if a["id"] == app_id),
                None)


async def test_executors_get_placeholders_env_and_their_own_dir(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2)
    worker_id = master.wait_joined(worker)
    command = ["sh", "-c", "echo '{{EXECUTOR_ID}} {{APP_ID}} {{CORES}} {{HOSTNAME}} "
               "{{WORKER_URL}}' > args; env | grep ^EMBER_ > env; echo $X > x; exec sleep 60"]
    async with registered(master, app_desc(command, env={"X": "from-app"})) as app:
        events = await events_until(app, lambda e: updates(e, "RUNNING"))
        executor = added(events)[0]
        assert (executor.worker_id, executor.cores, executor.memory) == (worker_id, 2, 128)
        directory = worker.work_dir / app.app_id / str(executor.exec_id)
        wait_for(lambda: (directory / "x").read_text(), 10, "the last file it writes")
        args = (directory / "args").read_text().split()
        worker_port = worker.json()["id"].rsplit("-", 1)[1]
        assert args == [str(executor.exec_id), app.app_id, "2", "127.0.0.1",
                        f"ember://127.0.0.1:{worker_port}"]
        env = dict(line.split("=", 1) for line in (directory / "env").read_text().split())
        assert env["EMBER_EXECUTOR_ID"] == str(executor.exec_id)
        assert env["EMBER_APP_ID"] == app.app_id
        assert (env["EMBER_EXECUTOR_CORES"], env["EMBER_EXECUTOR_MEMORY"]) == ("2", "128m")
        assert (directory / "x").read_text() == "from-app\n"
        assert (directory / "stderr").read_text().startswith('Launch Command: "sh" "-c"')
        view = worker.json()
        assert [e["appid"] for e in view["executors"]] == [app.app_id]
        assert (view["coresused"], view["memoryused"]) == (2, 128)
        entry = app_entry(master, app.app_id)
        assert entry is not None and list(entry) == SPARK_APP_KEYS
        assert (entry["state"], entry["name"], entry["user"]) == ("RUNNING", "test-app",
                                                                  getpass.getuser())
        app_id = app.app_id

    finished = wait_for(lambda: (e := app_entry(master, app_id)) and e["state"] == "FINISHED"
                        and e, 10, "app FINISHED")
    assert finished in master.json()["completedapps"]
    wait_for(lambda: worker.json()["executors"] == [], 10, "executor killed")
    assert worker.json()["finishedexecutors"][0]["state"] == "KILLED"


async def test_spread_out_and_consolidate(cluster: Cluster) -> None:
    for flags, expected in (((), 2), (("--consolidate",), 1)):
        master = cluster.master(*flags)
        for _ in range(2):
            master.wait_joined(cluster.worker(master.url, cores=4, memory="1g"))
        desc = app_desc(SLEEPER, cores_per_executor=1, max_cores=2)
        async with registered(master, desc) as app:
            events = await events_until(app, lambda e: len(added(e)) == 2)
            assert len({e.worker_id for e in added(events)}) == expected, flags
            assert all(e.cores == 1 for e in added(events))
        master.proc.stop()


async def test_executor_failures_fail_the_app_after_ten(cluster: Cluster) -> None:
    master = cluster.master()
    master.wait_joined(cluster.worker(master.url, cores=2))
    async with registered(master, app_desc(["sh", "-c", "exit 1"], cores_per_executor=1)) as app:
        events = await events_until(
            app, lambda e: any(isinstance(x, m.ApplicationRemoved) for x in e), timeout=30)
        app_id = app.app_id
    exited = updates(events, "EXITED")
    assert len(exited) >= 10
    assert all(e.exit_code == 1 and e.message == "Command exited with code 1" for e in exited)
    removed = [e for e in events if isinstance(e, m.ApplicationRemoved)]
    assert "executors failed" in removed[0].message
    entry = app_entry(master, app_id)
    assert entry is not None and entry["state"] == "FAILED"


async def test_a_driver_that_dies_fails_its_app_and_its_executors_stop(cluster: Cluster,
                                                                      tmp_path: Path) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url)
    master.wait_joined(worker)
    script = tmp_path / "dies.py"
    script.write_text(
        "import asyncio, os\n"
        "from toolkit.runtime import messages as m\n"
        "from toolkit.runtime.client import ApplicationClient\n"
        "async def main():\n"
        f"    app = await ApplicationClient.register(m.ApplicationDescription("
        f"name='doomed', command={SLEEPER!r}, memory_per_executor=64), {master.url!r})\n"
        "    while not isinstance(await app.event(), m.ExecutorUpdated): pass\n"
        "    print(app.app_id, flush=True)\n"
        "    os._exit(9)\n"
        "asyncio.run(main())\n")
    done = await asyncio.to_thread(lambda: __import__("subprocess").run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30))
    assert done.returncode == 9, done.stderr
    app_id = done.stdout.strip()
    wait_for(lambda: (e := app_entry(master, app_id)) and e["state"] == "FAILED", 10,
             "app FAILED after its driver died")
    wait_for(lambda: worker.json()["executors"] == [], 10, "its executor killed")


async def test_worker_lost_executors_lost_app_told_and_replaced(cluster: Cluster) -> None:
    master = cluster.master()
    first = cluster.worker(master.url, cores=1)
    first_id = master.wait_joined(first)
    async with registered(master, app_desc(SLEEPER, max_cores=1)) as app:
        events = await events_until(app, lambda e: updates(e, "RUNNING"))
        pid_file = first.work_dir / app.app_id / str(added(events)[0].exec_id) / "pid"
        orphan = int(wait_for(lambda: pid_file.read_text().strip(), 10, "executor pid"))
        second = cluster.worker(master.url, cores=1)
        second_id = master.wait_joined(second)
        try:
            first.proc.signal(signal.SIGKILL)
            events = await events_until(app, lambda e: len(added(e)) == 1)
            wait_for(lambda: not Path(f"/proc/{orphan}/cmdline").exists()
                     or not Path(f"/proc/{orphan}/cmdline").read_bytes(), 5,
                     "the lost worker's executor ended by its death signal")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        lost = updates(events, "LOST")
        assert lost and lost[0].worker_lost and lost[0].message == "worker lost"
        told = [e for e in events if isinstance(e, m.WorkerRemoved)]
        assert told and told[0].worker_id == first_id
        assert added(events)[0].worker_id == second_id


def test_the_pi_example_end_to_end(cluster: Cluster) -> None:
    master = cluster.master()
    workers = [cluster.worker(master.url, cores=2, memory="1g") for _ in range(2)]
    worker_ids = {master.wait_joined(w) for w in workers}

    done = ember("submit", "--master", master.url, "--wait", "--memory", "256m", "--",
                 sys.executable, str(EXAMPLE), "--samples", "200000", "--max-cores", "2")

    assert done.returncode == 0, done.stderr
    driver_id = done.stdout.strip()
    driver_dir = next(w.work_dir / driver_id for w in workers
                      if (w.work_dir / driver_id).exists())
    output = (driver_dir / "stdout").read_text()
    assert "Pi is roughly 3.1" in output
    apps = master.json()["completedapps"]
    assert [(a["name"], a["state"]) for a in apps] == [("MonteCarloPi", "FINISHED")]
    added_on = {line.split(" on ")[1].split()[0] for line in output.splitlines()
                if line.startswith("Executor") and " added on " in line}
    assert added_on == worker_ids  # spread out: one executor on each worker
