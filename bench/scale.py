#!/usr/bin/env python3
"""A master holding a large cluster: simulated workers against a real master process.

    .venv/bin/python bench/scale.py [--workers 5000] [--drivers 10000] [--tls] [--json OUT]

The master is a real `ember master` (with a cluster secret, as a real cluster has). The workers
are simulated in this one process, each on a real TCP connection from its own 127.x.y.z source
address, doing what the real worker does on the wire: the authenticated handshake,
RegisterWorker, WorkerLatestState after RegisteredWorker, one Heartbeat per second, and the
real worker's retry with backoff (toolkit.runtime.worker.registration_delay) when a connection
or a handshake fails. Measured:

- join: all workers started at once, until every one is registered (and /json says ALIVE);
  workers that gave up (none should: a real worker retries for 10 minutes);
- steady state at 1 heartbeat per second each: the master's CPU (share of one core, from
  /proc/PID/stat over 10 s) and RSS;
- /json with every worker listed: the median of 10 requests;
- one scheduling round with --drivers waiting drivers over the workers: the master's own
  schedule() on its records, in this process before the simulated workers fill its memory
  (no network), the median of 3;
- idle RSS of a master and of a worker with no work (real processes).

With --tls, the master has a host certificate of a fresh cluster CA and each simulated worker
connects over TLS with a certificate of its own, for its own address (mutual TLS, as the
playbook sets a cluster up); /json is read over HTTPS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import Sink, fmt, free_port, print_table, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.runtime import messages as m  # noqa: E402
from toolkit.runtime import wire  # noqa: E402
from toolkit.runtime.endpoint import raise_open_files  # noqa: E402
from toolkit.runtime.registration import registration_delay  # noqa: E402

TARGETS = {
    "join: all ALIVE (s)": 10.0,
    "join: gave up": 0,
    "master CPU at 1 Hz (% of a core)": 25.0,
    "master RSS (MB)": 150.0,
    "/json (ms)": 100.0,
    "scheduling round (ms)": 50.0,
    "idle master RSS (MB)": 40.0,
    "idle worker RSS (MB)": 40.0,
}
GIVE_UP = 60.0  # a simulated worker stops retrying after this (the real one: 600 s)


def source(n: int) -> str:
    """The n-th worker's own loopback address: 127.1.0.1, 127.1.0.2, ..."""
    return f"127.{1 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


HTTPS: ssl.SSLContext | None = None
"""Set by --tls: how /json is read."""


class SimWorker:
    def __init__(self, n: int, master_port: int, secret: bytes,
                 tls: ssl.SSLContext | None = None) -> None:
        self.n = n
        self.tls = tls
        self.host = source(n)
        self.id = f"worker-sim-{n:05d}"
        self.master_port = master_port
        self.secret = secret
        self.registered_at: float | None = None
        self.attempts = 0

    async def run(self, started: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            conn = await self._connect(started)
            if conn is None:
                return
            await self._serve(conn, stop)
            conn.close()

    async def _connect(self, started: float) -> wire.Connection | None:
        while time.monotonic() - started < GIVE_UP:
            self.attempts += 1
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.master_port, local_addr=(self.host, 0), ssl=self.tls,
                    server_hostname="127.0.0.1" if self.tls else None)
                try:
                    await asyncio.wait_for(wire.client_handshake(reader, writer, self.secret),
                                           wire.CONNECT_TIMEOUT)
                except BaseException:
                    writer.close()
                    raise
                return wire.Connection(reader, writer, f"master:{self.master_port}",
                                       wire.TO_WORKER)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, wire.WireError):
                await asyncio.sleep(registration_delay(self.attempts))
        return None

    async def _serve(self, conn: wire.Connection, stop: asyncio.Event) -> None:
        conn.send(m.RegisterWorker(self.id, self.host, 40000, 8, 16384,
                                   f"http://{self.host}:8081", f"127.0.0.1:{self.master_port}"))
        beating: asyncio.Task[None] | None = None
        try:
            async for message in conn.messages():
                if isinstance(message, m.RegisteredWorker):
                    if self.registered_at is None:
                        self.registered_at = time.monotonic()
                    conn.send(m.WorkerLatestState(self.id, [], []))
                    if beating is None:
                        beating = asyncio.create_task(self._beat(conn, stop))
                elif isinstance(message, m.ReconnectWorker):
                    conn.send(m.RegisterWorker(self.id, self.host, 40000, 8, 16384,
                                               f"http://{self.host}:8081",
                                               f"127.0.0.1:{self.master_port}"))
                if stop.is_set():
                    return
        except wire.WireError:
            return
        finally:
            if beating is not None:
                beating.cancel()

    async def _beat(self, conn: wire.Connection, stop: asyncio.Event) -> None:
        await asyncio.sleep(secrets.randbelow(1000) / 1000)  # spread over the second
        while not stop.is_set() and not conn.closed:
            conn.send(m.Heartbeat(self.id))
            await asyncio.sleep(1.0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def get(url: str, timeout: float = 10) -> bytes:
    if HTTPS is not None:
        url = url.replace("http://", "https://")
    with urllib.request.urlopen(url, timeout=timeout, context=HTTPS) as response:
        return bytes(response.read())


def start_master(tmp: Path, secret_file: Path | None, tls: Path | None = None
                 ) -> tuple[subprocess.Popen[bytes], int, int]:
    port, webui = free_port(), free_port()
    args = [sys.executable, "-m", "toolkit", "master", "--host", "127.0.0.1", "--port",
            str(port), "--webui-port", str(webui), "--worker-timeout", "60"]
    if secret_file is not None:
        args += ["--secret-file", str(secret_file)]
    if tls is not None:
        args += ["--tls-dir", str(tls)]
    log = open(tmp / f"master-{port}.log", "wb")  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=tmp)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            get(f"http://127.0.0.1:{webui}/readyz", 1)
            return proc, port, webui
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the master did not start: see {log.name}")


async def join_and_steady(workers: int, port: int, webui: int, secret: bytes, pid: int,
                          tls: list[ssl.SSLContext] | None = None) -> dict[str, float]:
    sims = [SimWorker(n, port, secret, tls[n] if tls else None) for n in range(workers)]
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(s.run(started, stop)) for s in sims]
    while time.monotonic() - started < GIVE_UP:
        joined = sum(s.registered_at is not None for s in sims)
        if joined == workers or all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    done = [s.registered_at - started for s in sims if s.registered_at is not None]
    figures: dict[str, float] = {
        "join: all ALIVE (s)": max(done) if len(done) == workers else float("inf"),
        "join: gave up": float(workers - len(done)),
        "join: connection attempts": float(sum(s.attempts for s in sims)),
    }
    loop = asyncio.get_running_loop()
    body = await loop.run_in_executor(None, get, f"http://127.0.0.1:{webui}/json")
    figures["ALIVE in /json"] = float(body.count(b'"state":"ALIVE"')
                                      or body.count(b'"state": "ALIVE"'))
    await asyncio.sleep(3)  # heartbeats settle into their 1 s rhythm
    before, at = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(10)
    figures["master CPU at 1 Hz (% of a core)"] = (
        100 * (cpu_seconds(pid) - before) / (time.monotonic() - at))
    figures["master RSS (MB)"] = rss_mb(pid)
    latencies = []
    for _ in range(10):
        began = time.monotonic()
        await loop.run_in_executor(None, get, f"http://127.0.0.1:{webui}/json")
        latencies.append((time.monotonic() - began) * 1000)
    figures["/json (ms)"] = statistics.median(latencies)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return figures


def scheduling_round(workers: int, drivers: int) -> float:
    """The master's schedule() once, over ``workers`` ALIVE workers and ``drivers`` waiting
    drivers (each 1 core, 512 MiB: some are placed, the rest keep waiting)."""
    from toolkit.runtime.config import MasterConfig
    from toolkit.runtime.master import Master
    from toolkit.runtime.records import WorkerInfo

    master = Master(MasterConfig(host="127.0.0.1"))
    now = time.time()
    for n in range(workers):
        worker = WorkerInfo(f"worker-{n}", source(n), 40000, 1, 1024, "http://x", Sink(),  # type: ignore[arg-type]
                            last_heartbeat=now, last_seen=time.monotonic())
        master.workers.add(worker)
    master.work.schedule = lambda: None  # type: ignore[method-assign]  # submit, don't place
    client = Sink()
    for _ in range(drivers):
        master.handle(m.RequestSubmitDriver(m.DriverDescription(["true"], cores=1, memory=512)),
                      client)  # type: ignore[arg-type]
    del master.work.schedule  # the real one again
    began = time.perf_counter()
    master.work.schedule()
    return (time.perf_counter() - began) * 1000


def certificates(tmp: Path, workers: int) -> tuple[Path, list[ssl.SSLContext]]:
    """A cluster CA; the master's TLS directory; a client context per simulated worker,
    with a certificate for its own address."""
    from toolkit.ops.certs import Authority

    ca = Authority.create("bench")
    master = tmp / "tls"
    master.mkdir()
    issued = ca.issue(["127.0.0.1"])
    (master / "ca.pem").write_bytes(ca.pem)
    (master / "cert.pem").write_bytes(issued.cert)
    (master / "key.pem").write_bytes(issued.key)
    (master / "key.pem").chmod(0o600)
    contexts = []
    for n in range(workers):
        own = ca.issue([source(n)])
        cert, key = tmp / "sim-cert.pem", tmp / "sim-key.pem"
        cert.write_bytes(own.cert)
        key.write_bytes(own.key)
        context = ssl.create_default_context(cafile=str(master / "ca.pem"))
        context.load_cert_chain(str(cert), str(key))
        contexts.append(context)
    return master, contexts


def idle_rss(tmp: Path) -> tuple[float, float]:
    proc, port, webui = start_master(tmp, None)
    worker_webui = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "worker", f"ember://127.0.0.1:{port}", "--host",
         "127.0.0.1", "--webui-port", str(worker_webui), "--cores", "1", "--memory", "1g",
         "--work-dir", str(tmp / "work")], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while b'"aliveworkers":1' not in get(f"http://127.0.0.1:{webui}/json").replace(b" ", b""):
            if time.monotonic() > deadline:
                raise RuntimeError("the idle worker did not register")
            time.sleep(0.1)
        time.sleep(3)
        return rss_mb(proc.pid), rss_mb(worker.pid)
    finally:
        for each in (worker, proc):
            each.terminate()
            each.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=5000)
    parser.add_argument("--drivers", type=int, default=10000)
    parser.add_argument("--tls", action="store_true",
                        help="mutual TLS: a certificate per simulated worker")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    global HTTPS
    if raise_open_files() < args.workers + 256:
        parser.error(f"this process may open too few files for {args.workers} connections "
                     f"(ulimit -Hn)")
    with tempfile.TemporaryDirectory(prefix="ember-scale-") as folder:
        tmp = Path(folder)
        secret = base64.b64encode(secrets.token_bytes(32))
        secret_file = tmp / "secret"
        secret_file.write_bytes(secret + b"\n")
        secret_file.chmod(0o600)
        from toolkit.runtime.config import read_secret_file

        key = read_secret_file(secret_file)
        # first, while this process holds no more than a master would: its records only
        print("scheduling rounds ...", file=sys.stderr, flush=True)
        rounds = [scheduling_round(args.workers, args.drivers) for _ in range(3)]
        tls_dir, contexts = None, None
        if args.tls:
            print(f"{args.workers + 1} certificates ...", file=sys.stderr, flush=True)
            tls_dir, contexts = certificates(tmp, args.workers)
        HTTPS = (ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
                 if tls_dir else None)
        proc, port, webui = start_master(tmp, secret_file, tls_dir)
        try:
            print(f"{args.workers} simulated workers joining ...", file=sys.stderr, flush=True)
            figures = asyncio.run(join_and_steady(args.workers, port, webui, key, proc.pid,
                                                  contexts))
        finally:
            HTTPS = None
            proc.terminate()
            proc.wait(15)
        figures["scheduling round (ms)"] = statistics.median(rounds)
        print("idle master and worker ...", file=sys.stderr, flush=True)
        figures["idle master RSS (MB)"], figures["idle worker RSS (MB)"] = idle_rss(tmp)
    lines = []
    for key, value in figures.items():
        target = TARGETS.get(key)
        met = "" if target is None else ("yes" if value <= target else "NO")
        lines.append([key, fmt(value) if value != int(value) or "(" in key else f"{value:.0f}",
                      "" if target is None else f"<= {target:g}", met])
    print(f"\n{args.workers} workers, {args.drivers} waiting drivers"
          f"{', mutual TLS' if args.tls else ''}\n")
    print_table(["measurement", "value", "target", "met"], lines)
    save(args.json, workers=args.workers, drivers=args.drivers, tls=args.tls, figures=figures,
         targets=TARGETS)
    return 0 if all(figures[k] <= t for k, t in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
