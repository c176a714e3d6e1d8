#!/usr/bin/env python3
"""Start-up, memory and failure-detection figures for Ember, side by side with Apache Spark.

    python bench/startup.py [--runs 3] [--timeout 10] [--spark-home PATH] [--json OUT]

For each system and run, on 127.0.0.1 with fresh ports:
  master launch -> RPC port accepts; master launch -> /json status ALIVE;
  worker launch -> ALIVE in master /json; RSS of master and worker after 10 s idle;
  kill -9 worker -> DEAD; SIGSTOP worker -> DEAD (same worker timeout on both);
  SIGCONT -> the same worker ALIVE again.
Spark runs from a pyspark install (bin/spark-class, Java 17), the same way spark-daemon.sh runs it.
Prints min/median per system and the Spark/Ember ratio; never asserts.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import accepts, compare, free_port, get_json, print_table, save, until


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class System:
    """How to launch one system's master and worker."""

    name: str
    master_cmd: Callable[[int, int], list[str]]
    worker_cmd: Callable[[str, int], list[str]]
    master_url: Callable[[int], str]
    env: dict[str, str] = field(default_factory=dict)


def ember(timeout: float) -> System:
    base = [sys.executable, "-m", "toolkit"]
    work = tempfile.mkdtemp(prefix="ember-bench-")
    return System(
        "ember",
        lambda port, ui: [*base, "master", "--host", "127.0.0.1", "--port", str(port),
                          "--webui-port", str(ui), "--worker-timeout", f"{timeout:g}"],
        lambda url, ui: [*base, "worker", url, "--host", "127.0.0.1", "--webui-port", str(ui),
                         "--cores", "1", "--memory", "512m", "--work-dir", work],
        lambda port: f"ember://127.0.0.1:{port}",
    )


def spark(home: Path, timeout: float) -> System:
    spark_class = str(home / "bin" / "spark-class")
    opts = f"-Dspark.worker.timeout={timeout:g}"
    logs = tempfile.mkdtemp(prefix="spark-bench-")
    return System(
        "spark",
        lambda port, ui: [spark_class, "org.apache.spark.deploy.master.Master", "--host",
                          "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
        lambda url, ui: [spark_class, "org.apache.spark.deploy.worker.Worker", "--host",
                         "127.0.0.1", "--webui-port", str(ui), "--cores", "1", "--memory",
                         "512m", "--work-dir", logs, url],
        lambda port: f"spark://127.0.0.1:{port}",
        {"SPARK_HOME": str(home), "SPARK_MASTER_OPTS": opts, "SPARK_WORKER_OPTS": opts,
         "SPARK_LOG_DIR": logs, "SPARK_NO_DAEMONIZE": "1"},
    )


class Run:
    """One master and its workers; everything started is ended in close()."""

    def __init__(self, system: System, log_dir: Path) -> None:
        self.system = system
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def launch(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{self.system.name}-{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **self.system.env})
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def worker_states(ui: int) -> dict[str, str]:
    return {w["id"]: w["state"] for w in get_json(ui)["workers"]}


def measure(system: System, timeout: float, idle: float, log_dir: Path) -> dict[str, float]:
    run = Run(system, log_dir)
    out: dict[str, float] = {}
    try:
        port, ui = free_port(), free_port()
        start = time.monotonic()
        master = run.launch(system.master_cmd(port, ui), "master")
        out["master launch -> port accepts (s)"] = until(lambda: accepts(port), 60,
                                                         "master port") - start
        out["master launch -> /json ALIVE (s)"] = until(
            lambda: get_json(ui)["status"] == "ALIVE", 60, "master ALIVE") - start

        url = system.master_url(port)
        start = time.monotonic()
        worker = run.launch(system.worker_cmd(url, free_port()), "worker")
        out["worker launch -> ALIVE in master (s)"] = until(
            lambda: "ALIVE" in worker_states(ui).values(), 60, "worker ALIVE") - start

        time.sleep(idle)
        out["master RSS after idle (MB)"] = rss_mb(master.pid)
        out["worker RSS after idle (MB)"] = rss_mb(worker.pid)

        (first_id,) = worker_states(ui)
        start = time.monotonic()
        os.kill(worker.pid, signal.SIGKILL)
        out["kill -9 worker -> DEAD (s)"] = until(
            lambda: worker_states(ui)[first_id] == "DEAD", 60, "DEAD after kill -9") - start

        worker = run.launch(system.worker_cmd(url, free_port()), "worker2")
        until(lambda: list(worker_states(ui).values()).count("ALIVE") == 1, 60, "second worker")
        (second_id,) = [i for i, s in worker_states(ui).items() if s == "ALIVE"]
        start = time.monotonic()
        os.kill(worker.pid, signal.SIGSTOP)
        out[f"SIGSTOP worker -> DEAD, timeout {timeout:g} s (s)"] = until(
            lambda: worker_states(ui)[second_id] == "DEAD", timeout * 4,
            "DEAD after SIGSTOP") - start
        start = time.monotonic()
        os.kill(worker.pid, signal.SIGCONT)
        out["SIGCONT -> same worker ALIVE (s)"] = until(
            lambda: worker_states(ui).get(second_id) == "ALIVE", 60, "ALIVE after SIGCONT") - start
    finally:
        run.close()
    return out


TARGETS = {
    "master launch -> port accepts (s)": 0.5,
    "worker launch -> ALIVE in master (s)": 0.5,
    "master RSS after idle (MB)": 40,
    "worker RSS after idle (MB)": 40,
    "kill -9 worker -> DEAD (s)": 0.1,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="worker timeout given to both systems (s)")
    parser.add_argument("--idle", type=float, default=10.0, help="idle time before RSS (s)")
    parser.add_argument("--spark-home", type=Path,
                        help="a Spark install with bin/spark-class (pyspark's package dir works)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()

    systems = [ember(args.timeout)]
    if args.spark_home:
        if not (args.spark_home / "bin" / "spark-class").exists():
            parser.error(f"{args.spark_home}/bin/spark-class not found")
        systems.append(spark(args.spark_home, args.timeout))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in systems}
    for n in range(args.runs):
        for system in systems:
            print(f"run {n + 1}/{args.runs}: {system.name} ...", file=sys.stderr, flush=True)
            results[system.name].append(measure(system, args.timeout, args.idle, log_dir))
    targets = {**TARGETS, f"SIGSTOP worker -> DEAD, timeout {args.timeout:g} s (s)":
               round(args.timeout * 1.3, 2)}
    table, header, lines = compare(results, targets, ["ember"])
    print(f"\n{args.runs} runs each, min / median; logs in {log_dir}\n")
    print_table(header, lines)
    save(args.json, runs=results, summary=table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
