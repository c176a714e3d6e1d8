#!/usr/bin/env python3
"""Master failover and restart with filesystem recovery, on real processes on this machine.

    .venv/bin/python bench/failover.py [--runs 3] [--workers 4] [--drivers 1000] [--json OUT]

- standby takeover: a leader and a standby on one recovery directory, --workers workers, one
  application with an executor on each worker and a running driver; kill -9 of the leader ->
  the standby ALIVE with every worker registered again and the application taken back; the
  same with ZooKeeper recovery (a real ZooKeeper server, Debian's package; 4 s sessions);
- restart: one master, kill -9, a new master process on the same directory and port -> ALIVE
  with every worker back (timed from the new process's start, Python's start-up included);
- restart with --drivers persisted waiting drivers (no worker) -> ALIVE.

The ZooKeeper takeover runs twice: kill -9 of the leader (its port refuses, and the standby
takes its lock at once), and SIGSTOP (a frozen leader: its ZooKeeper session must expire).
With --spark-home, Apache Spark's masters in ZooKeeper mode take over on the same ZooKeeper,
with a PySpark application holding an executor on each worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import compare, print_table, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Cluster, MasterProc, ember, free_port  # noqa: E402
from toolkit.runtime import messages as m  # noqa: E402
from toolkit.runtime.client import ApplicationClient, SubmissionClient  # noqa: E402

TARGETS = {"standby takeover (s)": 5.0, "standby takeover, zookeeper (s)": 5.0,
           "standby takeover, zookeeper, leader frozen (s)": 5.0,
           "restart, from the new process (s)": 1.0, "restart with the drivers (s)": 1.0}
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
SLEEPER = ["sh", "-c", "exec sleep 120"]


def master(cluster: Cluster, directory: Path | None, port: int, wait: bool = True,
           zookeeper: int | None = None) -> MasterProc:
    if zookeeper is not None:
        return cluster.master("--recovery-mode", "zookeeper", "--zookeeper-url",
                              f"127.0.0.1:{zookeeper}", port=port, wait=wait)
    return cluster.master("--recovery-mode", "filesystem", "--recovery-dir", str(directory),
                          port=port, wait=wait)


def start_zookeeper(tmp: Path, tick: int = 1000) -> tuple[int, subprocess.Popen[bytes]]:
    """A real ZooKeeper server, standalone, from Debian's package."""
    port = free_port()
    (tmp / "zk").mkdir()
    server = subprocess.Popen(
        ["java", "-Dzookeeper.admin.enableServer=false", "-cp", str(ZOOKEEPER_JAR),
         "org.apache.zookeeper.server.ZooKeeperServerMain", str(port), str(tmp / "zk"),
         str(tick)],  # tickTime: ZooKeeper expires sessions in ticks, so a takeover waits
        # for the session timeout plus up to one tick; sessions are at most 20 ticks
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"srvr")
            return b"Mode: standalone" in sock.recv(4096)
    until(answers, 30)
    return port, server


def until(check: Any, limit: float = 60) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError("did not happen in time")


def everything_back(target: MasterProc, workers: int, apps: int) -> bool:
    state = target.json()
    return bool(state["status"] == "ALIVE" and state["aliveworkers"] == workers
                and sum(a["state"] == "RUNNING" for a in state["activeapps"]) == apps)


async def with_app(url: str, workers: int, work: Any) -> Any:
    """Run ``work()`` (blocking, in a thread) while an application holds an executor on each
    worker; its driver program follows the master, as ApplicationClient does."""
    desc = m.ApplicationDescription("bench", SLEEPER, memory_per_executor=64,
                                    cores_per_executor=1, max_cores=workers)
    app = await ApplicationClient.register(desc, url)
    try:
        running = 0
        while running < workers:
            event = await app.event(30)
            running += isinstance(event, m.ExecutorUpdated) and event.state == "RUNNING"
        following = asyncio.ensure_future(app.event())
        result = await asyncio.to_thread(work)
        following.cancel()
        return result
    finally:
        await app.stop()
        await asyncio.sleep(0.2)  # the links the client left for another master close too


def takeover(tmp: Path, workers: int, zookeeper: int | None = None,
             how: signal.Signals = signal.SIGKILL) -> float:
    """kill -9 of the leader (its port then refuses), or SIGSTOP (it freezes: its port still
    accepts, and only ZooKeeper's session expiry hands its lock on)."""
    cluster = Cluster(tmp)
    try:
        directory = tmp / "recovery"
        leader = master(cluster, directory, free_port(), zookeeper=zookeeper)
        until(lambda: leader.json()["status"] == "ALIVE")
        standby = master(cluster, directory, free_port(), wait=False, zookeeper=zookeeper)
        until(lambda: standby.json()["status"] == "STANDBY")
        url = f"ember://127.0.0.1:{leader.port},127.0.0.1:{standby.port}"
        for _ in range(workers):
            leader.wait_joined(cluster.worker(url, cores=2, memory="1g"))
        ember("submit", "--master", url, "--memory", "64m", "--", *SLEEPER)

        def failover() -> float:
            began = time.monotonic()
            leader.proc.signal(how)
            return until(lambda: everything_back(standby, workers, 1)) - began
        return float(asyncio.run(with_app(url, workers, failover)))
    finally:
        cluster.stop_all()


def restart(tmp: Path, workers: int) -> float:
    cluster = Cluster(tmp)
    try:
        directory, port = tmp / "recovery", free_port()
        first = master(cluster, directory, port)
        for _ in range(workers):
            first.wait_joined(cluster.worker(first.url, cores=2, memory="1g"))
        ember("submit", "--master", first.url, "--memory", "64m", "--", *SLEEPER)

        def again() -> float:
            first.proc.signal(signal.SIGKILL)
            first.proc.wait()
            began = time.monotonic()
            second = master(cluster, directory, port, wait=False)
            return until(lambda: everything_back(second, workers, 1)) - began
        return float(asyncio.run(with_app(first.url, workers, again)))
    finally:
        cluster.stop_all()


def restart_with_drivers(tmp: Path, drivers: int) -> float:
    cluster = Cluster(tmp)
    try:
        directory, port = tmp / "recovery", free_port()
        first = master(cluster, directory, port)

        async def submit_all() -> None:
            async with await SubmissionClient.open(first.url) as client:
                for _ in range(drivers):  # no worker: every one waits
                    answer = await client.submit(m.DriverDescription(["true"], memory=64))
                    assert answer.success, answer.message
        asyncio.run(submit_all())
        first.proc.signal(signal.SIGKILL)
        first.proc.wait()
        began = time.monotonic()
        second = master(cluster, directory, port, wait=False)
        done = until(lambda: second.json()["status"] == "ALIVE"
                     and len(second.json()["activedrivers"]) == drivers)
        return done - began
    finally:
        cluster.stop_all()


SPARK_APP = """
import sys, time
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master(sys.argv[1]).appName("bench")
         .config("spark.executor.memory", "512m").config("spark.executor.cores", "1")
         .config("spark.cores.max", sys.argv[2]).getOrCreate())
spark.range(1000).count()
time.sleep(900)
"""


def spark_python(spark_home: Path) -> Path:
    """The Python of the environment that holds this pyspark (scripts/spark-env's .spark/)."""
    for parent in spark_home.parents:
        if (parent / "pyvenv.cfg").exists():
            return parent / "bin" / "python"
    return Path(sys.executable)


def spark_takeover(tmp: Path, spark_home: Path, zookeeper: int, workers: int) -> float:
    """Apache Spark's standalone masters in ZooKeeper mode, as a Spark user sets them
    (spark.worker.timeout as Ember's worker timeout, Curator's own session): kill -9 of the
    leader -> the standby ALIVE with every worker registered again and the application (a
    PySpark driver program holding an executor on each worker) taken back."""
    import os
    import urllib.request

    opts = (f"-Dspark.deploy.recoveryMode=ZOOKEEPER -Dspark.deploy.zookeeper.url=127.0.0.1:"
            f"{zookeeper} -Dspark.deploy.zookeeper.dir=/spark-bench -Dspark.worker.timeout=60 "
            "-Dspark.master.rest.enabled=false")
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_MASTER_OPTS": opts,
           "SPARK_LOG_DIR": str(tmp), "SPARK_WORKER_DIR": str(tmp / "work")}
    spark_class = str(spark_home / "bin" / "spark-class")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([spark_class, *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    def status(webui: int) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json", timeout=2) as answer:
            return dict(__import__("json").load(answer))

    try:
        ports = [(free_port(), free_port()) for _ in range(2)]
        masters = [start("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(p), "--webui-port", str(w)) for p, w in ports]
        def leading() -> int | None:  # whichever ZooKeeper elected
            return next((n for n, (_, w) in enumerate(ports)
                         if status(w)["status"] == "ALIVE"), None)
        until(lambda: leading() is not None, 120)
        lead = leading() or 0
        url = "spark://" + ",".join(f"127.0.0.1:{p}" for p, _ in ports)
        for _ in range(workers):
            start("org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                  "--webui-port", "0", "--cores", "1", "--memory", "1g")
        until(lambda: status(ports[lead][1])["aliveworkers"] == workers, 120)
        procs.append(subprocess.Popen(
            [str(spark_python(spark_home)), "-c", SPARK_APP, url, str(workers)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        until(lambda: any(a["state"] == "RUNNING" and a["cores"] == workers
                          for a in status(ports[lead][1])["activeapps"]), 180)
        time.sleep(2)  # its job done and its executors settled
        began = time.monotonic()
        masters[lead].kill()
        other = ports[1 - lead][1]
        done = until(lambda: (lambda st: st["status"] == "ALIVE" and st["aliveworkers"]
                              == workers and [a["state"] for a in st["activeapps"]]
                              == ["RUNNING"])(status(other)), 300)
        return done - began
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--drivers", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--zookeeper-tick", type=int, default=1000,
                        help="ZooKeeper's tickTime in ms (Debian's zoo.cfg: 2000)")
    parser.add_argument("--spark-home", type=Path,
                        help="also Apache Spark's ZooKeeper failover, side by side")
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    spark_runs: list[dict[str, float]] = []
    for n in range(args.runs):
        print(f"run {n + 1}/{args.runs}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="ember-failover-") as folder:
            tmp = Path(folder)
            for name in "abcd":
                (tmp / name).mkdir()
            zk_port, zk = start_zookeeper(tmp / "d", args.zookeeper_tick)
            try:
                with_zookeeper = takeover(tmp / "d", args.workers, zk_port)
                (tmp / "f").mkdir()
                frozen = takeover(tmp / "f", args.workers, zk_port, signal.SIGSTOP)
                if args.spark_home:
                    (tmp / "s").mkdir()
                    spark_runs.append({"standby takeover, zookeeper (s)": spark_takeover(
                        tmp / "s", args.spark_home, zk_port, args.workers)})
            finally:
                zk.kill()
                zk.wait()
            runs.append({
                "standby takeover (s)": takeover(tmp / "a", args.workers),
                "standby takeover, zookeeper (s)": with_zookeeper,
                "standby takeover, zookeeper, leader frozen (s)": frozen,
                "restart, from the new process (s)": restart(tmp / "b", args.workers),
                "restart with the drivers (s)": restart_with_drivers(tmp / "c", args.drivers),
            })
    table, header, lines = compare({"ember": runs}, TARGETS, ["ember"])
    if spark_runs:
        ember_zk = sorted(r["standby takeover, zookeeper (s)"] for r in runs)
        spark_zk = sorted(r["standby takeover, zookeeper (s)"] for r in spark_runs)
        print(f"ZooKeeper takeover, medians: Ember {ember_zk[len(ember_zk) // 2]:.2f} s, "
              f"Spark {spark_zk[len(spark_zk) // 2]:.2f} s "
              f"({spark_zk[len(spark_zk) // 2] / ember_zk[len(ember_zk) // 2]:.1f}x); "
              f"Spark runs: {', '.join(f'{v:.1f}' for v in spark_zk)} s")
        table["spark"] = spark_runs
    print(f"\n{args.workers} workers, 1 application, {args.drivers} persisted drivers, "
          f"{args.runs} runs, min / median\n")
    print_table(header, lines)
    save(args.json, runs=runs, summary=table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
