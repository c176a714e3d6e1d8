#!/usr/bin/env python3
"""Daemon start/stop figures: `ember daemon` (plain, supervisor) against Spark's spark-daemon.sh.

    python bench/daemon.py [--runs 5] [--spark-home PATH] [--json OUT]

For each system and run, a master on 127.0.0.1 with fresh ports:
  start -> ready: from running the start command until it has returned AND the RPC port accepts
  (spark-daemon.sh returns before its JVM listens; `ember daemon start` returns once ready);
  stop -> gone: from running the stop command until the process no longer exists (Spark's
  stop returns right after SIGTERM; Ember's waits).
supervisor's first start also launches supervisord; that cold start is reported on its own row.
"""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import accepts, compare, fmt, free_port, pid_gone, print_table, save, until

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
TARGETS = {"start -> ready (s)": 1.0, "stop -> process gone (s)": 0.5}


@dataclass
class Daemon:
    name: str
    env: dict[str, str]
    spark_home: Path | None = None

    def command(self, action: str, port: int, ui: int) -> list[str]:
        if self.spark_home is not None:
            args = [str(self.spark_home / "sbin" / "spark-daemon.sh"), action, MASTER_CLASS, "1"]
            if action == "start":
                args += ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]
            return args
        args = [sys.executable, "-m", "toolkit", "daemon", action, "master"]
        if action == "start":
            args += ["--", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]
        return args

    def pid_file(self) -> Path:
        if self.spark_home is not None:
            return Path(self.env["SPARK_PID_DIR"]) / f"spark-bench-{MASTER_CLASS}-1.pid"
        return Path(self.env["EMBER_HOME"]) / "run" / "ember-bench-master-1.pid"

    def run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{argv} failed: {result.stdout}{result.stderr}")


def ember(backend: str) -> Daemon:
    home = tempfile.mkdtemp(prefix=f"bench-{backend}-")
    sup = tempfile.mkdtemp(prefix="bs-", dir="/tmp")
    # as root, roles would run as the user `ember`, who may not reach this machine's Python
    # (under /root with pyenv): the benchmark runs them as root, as Spark's scripts do
    return Daemon(f"ember {backend}", {"EMBER_HOME": home, "EMBER_DAEMON_BACKEND": backend,
                                       "EMBER_IDENT_STRING": "bench", "EMBER_SUPERVISOR_DIR": sup,
                                       "EMBER_RUN_USER": "root"})


def spark(home: Path) -> Daemon:
    base = tempfile.mkdtemp(prefix="bench-spark-")
    return Daemon("spark", {"SPARK_HOME": str(home), "SPARK_PID_DIR": base,
                            "SPARK_LOG_DIR": base, "SPARK_IDENT_STRING": "bench",
                            "USER": getpass.getuser()}, home)


def cycle(daemon: Daemon) -> dict[str, float]:
    port, ui = free_port(), free_port()
    start = time.monotonic()
    daemon.run(daemon.command("start", port, ui))
    returned = time.monotonic()
    ready = until(lambda: accepts(port), 60, "port accepts")
    pid = int(daemon.pid_file().read_text())
    out = {"start command returns (s)": returned - start,
           "start -> ready (s)": max(ready, returned) - start}
    start = time.monotonic()
    daemon.run(daemon.command("stop", port, ui))
    returned = time.monotonic()
    gone = until(lambda: pid_gone(pid), 60, "process gone")
    out["stop command returns (s)"] = returned - start
    out["stop -> process gone (s)"] = max(gone, returned) - start
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spark-home", type=Path, help="pyspark's package dir works")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    daemons = [ember("plain"), ember("supervisor")]
    if args.spark_home:
        daemons.append(spark(args.spark_home))
    results: dict[str, list[dict[str, float]]] = {d.name: [] for d in daemons}
    cold: dict[str, float] = {}
    try:
        for n in range(args.runs + 1):
            for daemon in daemons:
                print(f"run {n}/{args.runs}: {daemon.name}", file=sys.stderr, flush=True)
                figures = cycle(daemon)
                if n == 0:  # warm-up; for supervisor this is the cold start of supervisord
                    cold[daemon.name] = figures["start -> ready (s)"]
                else:
                    results[daemon.name].append(figures)
    finally:
        subprocess.run([sys.executable, "-m", "toolkit", "daemon", "supervisor-shutdown"],
                       env={**os.environ, **daemons[1].env}, capture_output=True, check=False)

    table, header, lines = compare(results, TARGETS, [d.name for d in daemons[:2]])
    print(f"\n{args.runs} runs each (after one warm-up), min / median\n")
    print_table(header, lines)
    print("\nfirst start (warm-up run), start -> ready: "
          + ", ".join(f"{n} {fmt(v)} s" for n, v in cold.items())
          + "  (ember supervisor's includes starting supervisord)")
    save(args.json, runs=results, summary=table, cold=cold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
