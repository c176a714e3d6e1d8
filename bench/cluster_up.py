#!/usr/bin/env python3
"""Bringing a 1 master + 4 worker cluster up and down on the lab (needs root), Ember vs Spark.

    sudo .venv/bin/python bench/cluster_up.py [--runs 3] [--spark-home PATH] [--json OUT]

Hosts are network namespaces with their own sshd (tests/lab/netlab.py). Ember: `fab deploy`
once, then per run `fab start-all` (returns when every worker is ALIVE), `fab status`,
`fab stop-all` (returns when everything is gone). Spark, the way its sbin scripts do it:
spark-daemon.sh through ssh, the master first, then every worker in parallel; "up" is when the
master's /json shows all 4 workers ALIVE; status is spark-daemon.sh status on every host in
parallel; "down" is spark-daemon.sh stop on every host until no JVM is left.
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import compare, print_table, save, until

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab.netlab import Lab, missing_requirements  # noqa: E402
from tests.lab.test_playbook_lab import write_inventory  # noqa: E402
from tests.procs import cluster_ca  # noqa: E402

FAB = Path(sys.executable).parent / "fab"
WORKERS = 4
TARGETS = {"up: all workers ALIVE (s)": 3.0, "status (s)": 1.5, "down: nothing left (s)": 2.0}


def fab(inventory: Path, *args: str) -> float:
    start = time.monotonic()
    done = subprocess.run([str(FAB), "-r", str(ROOT), *args, "--inventory", str(inventory)],
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if done.returncode not in (0, 1) or (args[0] != "status" and done.returncode):
        raise RuntimeError(f"fab {args[0]} failed:\n{done.stdout}{done.stderr}")
    return elapsed


def alive_workers(url: str, context: ssl.SSLContext | None = None) -> int:
    with urllib.request.urlopen(f"{url}/json", timeout=1, context=context) as response:
        return int(json.load(response)["aliveworkers"])


def ember_cycle(lab: Lab, inventory: Path) -> dict[str, float]:
    """Across hosts the playbook turns TLS on (`tls: auto`): the UI is HTTPS, verified with
    the cluster CA it made beside the inventory's secret."""
    up = fab(inventory, "start-all")
    context = cluster_ca(lab.workdir / "secret")
    assert alive_workers(f"https://{lab.hosts[0].address}:8080", context) == WORKERS
    return {"up: all workers ALIVE (s)": up, "status (s)": fab(inventory, "status"),
            "down: nothing left (s)": fab(inventory, "stop-all")}


class Spark:
    def __init__(self, lab: Lab, home: Path) -> None:
        self.lab = lab
        self.home = home
        self.master = lab.hosts[0].address

    def ssh(self, address: str, command: str) -> str:
        env = (f"SPARK_HOME={self.home} SPARK_PID_DIR={self.lab.common}/spark "
               f"SPARK_LOG_DIR={self.lab.common}/spark SPARK_IDENT_STRING=bench "
               f"SPARK_LOCAL_IP={address}")  # lab hostnames do not resolve
        done = subprocess.run(
            ["ssh", "-i", str(self.lab.key), "-o", f"UserKnownHostsFile={self.lab.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{address}",
             f"{env} {command}"], capture_output=True, text=True, check=False)
        return done.stdout + done.stderr

    def daemon(self, address: str, action: str, cls: str, *args: str) -> str:
        return self.ssh(address, f"{self.home}/sbin/spark-daemon.sh {action} "
                                 f"org.apache.spark.deploy.{cls} 1 {' '.join(args)}")

    def workers(self, action: str, *args: str) -> None:
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda h: self.daemon(h.address, action, "worker.Worker", *args,
                                                *(["--host", h.address] if args else [])),
                          self.lab.hosts[1:]))

    def cycle(self) -> dict[str, float]:
        url = f"spark://{self.master}:7077"
        start = time.monotonic()
        self.daemon(self.master, "start", "master.Master", "--host", self.master)  # start-master
        self.workers("start", "--cores", "1", "--memory", "512m", url)           # start-slaves
        up = until(lambda: alive_workers(f"http://{self.master}:8080") == WORKERS, 120,
                   "Spark workers ALIVE") - start
        start = time.monotonic()
        self.workers("status")
        self.daemon(self.master, "status", "master.Master")
        status = time.monotonic() - start
        start = time.monotonic()
        self.workers("stop")
        self.daemon(self.master, "stop", "master.Master")
        until(lambda: not any(self._java(h) for h in self.lab.hosts), 60, "Spark JVMs gone")
        return {"up: all workers ALIVE (s)": up, "status (s)": status,
                "down: nothing left (s)": time.monotonic() - start}

    def _java(self, host: object) -> bool:
        for pid in self.lab.pids(host):  # type: ignore[arg-type]
            try:
                if b"java" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                    return True
            except OSError:
                continue
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--spark-home", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    problem = missing_requirements()
    if problem:
        parser.error(problem)
    workdir = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    try:
        results: dict[str, list[dict[str, float]]] = {"ember": []}
        with Lab(workdir, 1 + WORKERS) as lab:
            inventory = write_inventory(lab, workdir / "lab.yml", run_user="root")
            print("deploying the toolkit to 5 hosts ...", file=sys.stderr, flush=True)
            subprocess.run([str(FAB), "-r", str(ROOT), "deploy", "--inventory", str(inventory),
                            "--python", str(Path(sys.base_prefix) / "bin" / "python3")],
                           check=True, capture_output=True)
            spark = Spark(lab, args.spark_home) if args.spark_home else None
            if spark:
                results["spark"] = []
            for n in range(args.runs):
                print(f"run {n + 1}/{args.runs}", file=sys.stderr, flush=True)
                results["ember"].append(ember_cycle(lab, inventory))
                if spark:
                    results["spark"].append(spark.cycle())
    finally:  # each host's tree (a venv each): hundreds of MB
        shutil.rmtree(workdir, ignore_errors=True)
    table, header, lines = compare(results, TARGETS, ["ember"])
    print(f"\n1 master + {WORKERS} worker hosts over SSH, {args.runs} runs, min / median\n")
    print_table(header, lines)
    save(args.json, runs=results, summary=table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
