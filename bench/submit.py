#!/usr/bin/env python3
"""Driver submission latency and throughput of Ember's master, and its REST API next to Spark's.

    python bench/submit.py [--runs 5] [--drivers 1000] [--timeout 60] [--spark-home PATH]
                           [--json OUT]

Ember runs as real processes on 127.0.0.1 with fresh ports, at their default log level: a
master with --rest-port and two workers (--cores 8 --memory 4g each). After one warm-up
submission, each run measures, over one SubmissionClient connection with watch=True:
  submit_to_running:  RequestSubmitDriver sent -> DriverStatusResponse RUNNING received
                      (command `true`; target <= 20 ms);
  submit_to_finished: the same driver, sent -> DriverStatusResponse FINISHED received;
  submit_to_started:  time.time() before sending -> the wall time `date +%s.%N` writes into
                      <work dir>/<driver-id>/stdout (target <= 100 ms);
  throughput:         --drivers `true` drivers (1 core, 16 MiB) all sent at once on the one
                      connection, then every final state read back; drivers/s = N / (last
                      final state - first send) (target >= 200 drivers/s).
rest_submit_to_running: POST /v1/submissions/create, then GET /status/<id> every 5 ms until
driverState is RUNNING; from just before the POST (on an open keep-alive connection) to that
answer. Ember runs /bin/sleep 0.2 (it stays RUNNING long enough to be seen as such); Spark
(master with spark.master.rest.enabled, one worker with 1 core and 1g, started the way
bench/startup.py does) runs a one-line Java class from a jar built here with javac. Every
driver is awaited to its final state before the next run. One unreported warm-up each.
Spark is skipped without --spark-home. Prints min/median, latencies in ms; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import compare, fmt, free_port, get_json, print_table, save, summary, until

from toolkit.runtime import messages as m
from toolkit.runtime.client import SubmissionClient
from toolkit.runtime.states import FINISHED_DRIVER_STATES, DriverState

TARGETS = {"submit_to_running (ms)": 20.0, "submit_to_started (ms)": 100.0}
THROUGHPUT_TARGET = 200.0
SPARK_REFERENCE = "34 ms min / 45 ms median"
SPARK_VERSION = "4.3.0"
FINAL = {s.value for s in FINISHED_DRIVER_STATES}
HELLO = 'public class Hello { public static void main(String[] a) { System.out.println("hi"); } }'


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Processes -----------------------------------------------------------------------------------


@dataclass
class Processes:
    """Everything this benchmark starts; close() ends it all (each in its own session)."""

    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def launch(self, argv: list[str], name: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):  # workers before masters
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of its group (Spark drivers)


def alive_workers(ui: int) -> int:
    return sum(w["state"] == "ALIVE" for w in get_json(ui)["workers"])


@dataclass
class Cluster:
    name: str
    url: str
    rest_port: int
    work_dirs: list[Path]


def start_ember(procs: Processes, scratch: Path, timeout: float) -> Cluster:
    base = [sys.executable, "-m", "toolkit"]
    port, ui, rest = free_port(), free_port(), free_port()
    env = {"EMBER_SECRET_FILE": ""}  # loopback, no secret: the same for REST and RPC
    procs.launch([*base, "master", "--host", "127.0.0.1", "--port", str(port), "--webui-port",
                  str(ui), "--rest-port", str(rest)], "ember-master", env)
    url = f"ember://127.0.0.1:{port}"
    work_dirs = []
    for n in (1, 2):
        work = scratch / f"ember-work-{n}"
        work_dirs.append(work)
        procs.launch([*base, "worker", url, "--host", "127.0.0.1", "--webui-port",
                      str(free_port()), "--cores", "8", "--memory", "4g", "--work-dir",
                      str(work)], f"ember-worker-{n}", env)
    until(lambda: alive_workers(ui) == 2, timeout, "two Ember workers ALIVE")
    return Cluster("ember", url, rest, work_dirs)


def start_spark(procs: Processes, home: Path, scratch: Path, timeout: float) -> Cluster:
    spark_class = str(home / "bin" / "spark-class")
    port, ui, rest = free_port(), free_port(), free_port()
    logs, work = scratch / "spark-logs", scratch / "spark-work"
    logs.mkdir()
    env = {"SPARK_HOME": str(home), "SPARK_LOG_DIR": str(logs), "SPARK_NO_DAEMONIZE": "1",
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=true "
                                f"-Dspark.master.rest.port={rest}"}
    procs.launch([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                  "--port", str(port), "--webui-port", str(ui)], "spark-master", env)
    url = f"spark://127.0.0.1:{port}"
    procs.launch([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                  "--webui-port", str(free_port()), "--cores", "1", "--memory", "1g",
                  "--work-dir", str(work), url], "spark-worker", env)
    until(lambda: alive_workers(ui) == 1, timeout, "the Spark worker ALIVE")
    return Cluster("spark", url, rest, [work])


def build_jar(scratch: Path) -> Path:
    src = scratch / "hello"
    src.mkdir()
    (src / "Hello.java").write_text(HELLO + "\n")
    subprocess.run(["javac", "--release", "17", "Hello.java"], cwd=src, check=True)
    subprocess.run(["jar", "cf", "hello.jar", "Hello.class"], cwd=src, check=True)
    return src / "hello.jar"


# Ember over its wire protocol ----------------------------------------------------------------


def tiny(command: list[str], name: str) -> m.DriverDescription:
    return m.DriverDescription(command=command, cores=1, memory=16, name=name)


async def watch(client: SubmissionClient, desc: m.DriverDescription, timeout: float
                ) -> tuple[str, dict[str, float]]:
    """Submit with watch=True; (driver id, perf_counter and wall time of each step)."""
    times = {"wall": time.time(), "sent": time.perf_counter()}
    answer = await client.submit(desc, watch=True)
    if not answer.success or answer.driver_id is None:
        raise RuntimeError(f"submission refused: {answer.message}")
    while True:
        status = await client.next_status(timeout)
        if status.driver_id != answer.driver_id or status.state is None:
            continue
        times.setdefault(status.state, time.perf_counter())
        if status.state in FINAL:
            if status.state != DriverState.FINISHED:
                raise RuntimeError(f"driver {answer.driver_id} ended {status.state}: "
                                   f"{status.message}")
            return answer.driver_id, times


def started_wall(cluster: Cluster, driver_id: str) -> float:
    for work in cluster.work_dirs:
        stdout = work / driver_id / "stdout"
        if stdout.exists():
            return float(stdout.read_text().split()[0])
    raise FileNotFoundError(f"no stdout of {driver_id} in {cluster.work_dirs}")


async def latencies(client: SubmissionClient, cluster: Cluster, timeout: float
                    ) -> dict[str, float]:
    _, times = await watch(client, tiny(["true"], "bench-true"), timeout)
    driver_id, dated = await watch(client, tiny(["date", "+%s.%N"], "bench-date"), timeout)
    ms = {"submit_to_running": times["RUNNING"] - times["sent"],
          "submit_to_started": started_wall(cluster, driver_id) - dated["wall"],
          "submit_to_finished": times["FINISHED"] - times["sent"]}
    return {f"{key} (ms)": value * 1000 for key, value in ms.items()}


async def throughput(client: SubmissionClient, drivers: int, timeout: float
                     ) -> dict[str, Any]:
    """All submissions pipelined on the one connection; every final state read back."""
    desc = tiny(["true"], "bench-throughput")
    first = time.perf_counter()
    for _ in range(drivers):
        client.conn.send(m.RequestSubmitDriver(desc, True))
    ends: Counter[str] = Counter()
    refused = 0
    last = first
    while sum(ends.values()) + refused < drivers:
        message = await asyncio.wait_for(client.inbox.get(), timeout)
        if message is None:
            raise ConnectionError("the master closed the connection")
        if isinstance(message, m.SubmitDriverResponse) and not message.success:
            refused += 1
            last = time.perf_counter()
        elif isinstance(message, m.DriverStatusResponse) and message.state in FINAL:
            ends[message.state] += 1
            last = time.perf_counter()
    if refused or set(ends) != {"FINISHED"}:
        note(f"  throughput run: {refused} refused, final states {dict(ends)}")
    return {"drivers/s": drivers / (last - first), "seconds": last - first,
            "refused": refused, "final states": dict(ends)}


async def ember_rpc(cluster: Cluster, runs: int, drivers: int, timeout: float
                    ) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    client = await SubmissionClient.open(cluster.url, None)
    try:
        await latencies(client, cluster, timeout)  # warm-up
        lat, thr = [], []
        for n in range(runs):
            note(f"run {n + 1}/{runs}: ember submit latencies, {drivers} drivers pipelined ...")
            lat.append(await latencies(client, cluster, timeout))
            thr.append(await throughput(client, drivers, timeout))
        return lat, thr
    finally:
        await client.close()


# REST, Ember and Spark -----------------------------------------------------------------------


class Rest:
    """One keep-alive HTTP connection to a master's REST port."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.connect()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json;charset=UTF-8"} if data else {}
        self.conn.request(method, f"/v1/submissions/{path}", body=data, headers=headers)
        response = self.conn.getresponse()
        return json.loads(response.read())

    def close(self) -> None:
        self.conn.close()


def create_request(cluster: Cluster, resource: str, main_class: str, args: list[str]
                   ) -> dict[str, Any]:
    return {"action": "CreateSubmissionRequest", "clientSparkVersion": SPARK_VERSION,
            "appResource": resource, "mainClass": main_class, "appArgs": args,
            "sparkProperties": {"spark.app.name": "bench-rest", "spark.driver.memory": "512m",
                                "spark.driver.cores": "1", "spark.driver.supervise": "false",
                                "spark.master": cluster.url},
            "environmentVariables": {}}


def rest_run(cluster: Cluster, request: dict[str, Any], timeout: float) -> dict[str, float]:
    rest = Rest(cluster.rest_port)
    try:
        start = time.perf_counter()
        created = rest.call("POST", "create", request)
        if not created.get("success"):
            raise RuntimeError(f"{cluster.name} refused the submission: {created}")
        driver_id = created["submissionId"]
        deadline = start + timeout
        state = ""
        while state != "RUNNING":
            if state in FINAL or time.perf_counter() > deadline:
                raise RuntimeError(f"{cluster.name} driver {driver_id} is {state}, never seen "
                                   "RUNNING")
            if state:
                time.sleep(0.005)
            state = rest.call("GET", f"status/{driver_id}").get("driverState") or "?"
        running = time.perf_counter() - start
        while state not in FINAL:  # free the worker for the next run
            if time.perf_counter() > deadline:
                rest.call("POST", f"kill/{driver_id}")
                raise TimeoutError(f"{cluster.name} driver {driver_id} still {state}")
            time.sleep(0.05)
            state = rest.call("GET", f"status/{driver_id}").get("driverState") or "?"
        if state != "FINISHED":
            note(f"  {cluster.name} REST driver {driver_id} ended {state}")
        return {"rest_submit_to_running (ms)": running * 1000}
    finally:
        rest.close()


def rest_requests(ember: Cluster, spark: Cluster | None, jar: Path | None
                  ) -> dict[str, tuple[Cluster, dict[str, Any]]]:
    chosen = {"ember": (ember, create_request(ember, "/bin/sleep", "", ["0.2"]))}
    if spark is not None and jar is not None:
        chosen["spark"] = (spark, create_request(spark, f"file:{jar}", "Hello", []))
    return chosen


# Main ----------------------------------------------------------------------------------------


def throughput_line(runs: list[dict[str, Any]], drivers: int) -> list[str]:
    stats = summary([r["drivers/s"] for r in runs])
    met = stats["median"] >= THROUGHPUT_TARGET
    return [f"throughput, {drivers} drivers (drivers/s)", fmt(stats["min"]),
            fmt(stats["median"]), f">= {THROUGHPUT_TARGET:g}/s", "yes" if met else "NO"]


def run(args: argparse.Namespace, procs: Processes, scratch: Path) -> dict[str, Any]:
    ember = start_ember(procs, scratch, args.timeout)
    lat, thr = asyncio.run(ember_rpc(ember, args.runs, args.drivers, args.timeout))

    spark, jar = None, None
    if args.spark_home:
        note("starting Spark's master and worker, building the jar ...")
        jar = build_jar(scratch)
        spark = start_spark(procs, args.spark_home, scratch, args.timeout)
    requests = rest_requests(ember, spark, jar)
    rest: dict[str, list[dict[str, float]]] = {name: [] for name in requests}
    cold: dict[str, float] = {}
    for n in range(args.runs + 1):
        for name, (cluster, request) in requests.items():
            note(f"REST run {n}/{args.runs} (0 = warm-up): {name} ...")
            figures = rest_run(cluster, request, args.timeout)
            if n:
                rest[name].append(figures)
            else:
                cold[name] = figures["rest_submit_to_running (ms)"]

    rpc_table, header, lines = compare({"ember": lat}, TARGETS, ["ember"])
    lines.append(throughput_line(thr, args.drivers))
    print(f"\nEmber, wire protocol (SubmissionClient, watch=True): {args.runs} runs after one "
          "warm-up, min / median\n(throughput: higher is better, its min is the worst run)\n")
    print_table(header, lines)

    rest_table, header, lines = compare(rest, {}, ["ember"])
    print(f"\nREST create -> status RUNNING (Ember /bin/sleep 0.2; Spark a Java class in a jar): "
          f"{args.runs} runs after one warm-up, min / median\n")
    print_table(header, lines)
    print("\nfirst REST submission (warm-up run), create -> RUNNING: "
          + ", ".join(f"{n} {fmt(v)} ms" for n, v in cold.items()))
    if spark is None:
        print("\nSpark skipped (no --spark-home); "
              f"reference on this machine: Spark {SPARK_REFERENCE}")
    print(f"\nlogs in {procs.log_dir}")
    return {"runs": {"ember rpc": lat, "ember throughput": thr, "rest": rest}, "cold": cold,
            "summary": {"ember rpc": rpc_table, "rest": rest_table,
                        "throughput drivers/s": summary([r["drivers/s"] for r in thr])}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drivers", type=int, default=1000,
                        help="drivers submitted at once for the throughput figure")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="longest wait for a cluster to come up or a driver to end (s)")
    parser.add_argument("--spark-home", type=Path,
                        help="a Spark install with bin/spark-class (pyspark's package dir works)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if args.spark_home and not (args.spark_home / "bin" / "spark-class").exists():
        parser.error(f"{args.spark_home}/bin/spark-class not found")

    scratch = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    procs = Processes(scratch / "logs")
    procs.log_dir.mkdir()
    previous: Callable[..., Any] | int | None = signal.signal(
        signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below still runs
    try:
        payload = run(args, procs, scratch)
    finally:
        procs.close()
        signal.signal(signal.SIGTERM, previous)
        for work in scratch.glob("*-work*"):
            shutil.rmtree(work, ignore_errors=True)
    save(args.json, **payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
