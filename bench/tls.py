#!/usr/bin/env python3
"""What TLS costs a client of a real master: the connection (TCP, TLS, the authenticated
handshake) and a submission's round trip, plain against TLS, on the same machine.

    .venv/bin/python bench/tls.py [--rounds 300] [--json OUT]

Both masters are real `ember master` processes with a cluster secret; the TLS one has a host
certificate of a fresh cluster CA (ECDSA P-256, as `fab start-all` makes). Measured, each the
median and the 95th percentile of --rounds:

- connect: open, TLS (when on) and the handshake, as `ember submit` and every worker do;
- submit on an open connection: RequestSubmitDriver until its SubmitDriverResponse (the
  master has no worker: the driver waits, nothing runs);
- submit on a new connection: both, as one `ember submit` does.

The heartbeat CPU at 5,000 workers over TLS is bench/scale.py --tls.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fmt, free_port, print_table, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.ops.certs import Authority  # noqa: E402
from toolkit.runtime import messages as m  # noqa: E402
from toolkit.runtime import wire  # noqa: E402
from toolkit.runtime.config import load_keys  # noqa: E402
from toolkit.runtime.keys import Keys  # noqa: E402


def tls_dir(tmp: Path) -> Path:
    folder = tmp / "tls"
    folder.mkdir()
    ca = Authority.create("bench")
    issued = ca.issue(["127.0.0.1"])
    (folder / "ca.pem").write_bytes(ca.pem)
    (folder / "cert.pem").write_bytes(issued.cert)
    (folder / "key.pem").write_bytes(issued.key)
    (folder / "key.pem").chmod(0o600)
    return folder


def start_master(tmp: Path, secret_file: Path, tls: Path | None) -> tuple[subprocess.Popen[bytes],
                                                                          int]:
    port, webui = free_port(), free_port()
    args = [sys.executable, "-m", "toolkit", "master", "--host", "127.0.0.1", "--port",
            str(port), "--webui-port", str(webui), "--secret-file", str(secret_file)]
    if tls is not None:
        args += ["--tls-dir", str(tls)]
    log = open(tmp / f"master-{port}.log", "wb")  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=tmp)
    return proc, port


async def ready(port: int, keys: Keys) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = await wire.connect("127.0.0.1", port, keys, wire.TO_CLIENT)
            conn.close()
            return
        except (OSError, wire.WireError):
            await asyncio.sleep(0.05)
    raise RuntimeError("the master did not start")


async def measure(port: int, keys: Keys, rounds: int) -> dict[str, list[float]]:
    await ready(port, keys)
    found: dict[str, list[float]] = {"connect": [], "submit (open connection)": [],
                                     "submit (new connection)": []}
    desc = m.DriverDescription(["true"], memory=16)
    for _ in range(rounds):
        began = time.perf_counter()
        conn = await wire.connect("127.0.0.1", port, keys, wire.TO_CLIENT)
        found["connect"].append(time.perf_counter() - began)
        conn.close()
        await conn.wait_closed(1.0)
    conn = await wire.connect("127.0.0.1", port, keys, wire.TO_CLIENT)
    replies = conn.messages()
    for n in range(rounds):
        began = time.perf_counter()
        conn.send(m.RequestSubmitDriver(desc, request_id=n + 1))
        reply = await anext(replies)
        assert isinstance(reply, m.SubmitDriverResponse) and reply.success, reply
        found["submit (open connection)"].append(time.perf_counter() - began)
    conn.close()
    for n in range(rounds):
        began = time.perf_counter()
        fresh = await wire.connect("127.0.0.1", port, keys, wire.TO_CLIENT)
        fresh.send(m.RequestSubmitDriver(desc, request_id=n + 1))
        reply = await anext(fresh.messages())
        assert isinstance(reply, m.SubmitDriverResponse) and reply.success, reply
        found["submit (new connection)"].append(time.perf_counter() - began)
        fresh.close()
        await fresh.wait_closed(1.0)
    return found


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ember-tls-") as folder:
        tmp = Path(folder)
        secret_file = tmp / "secret"
        secret_file.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        secret_file.chmod(0o600)
        certs = tls_dir(tmp)
        for name, tls in (("plain", None), ("tls", certs)):
            proc, port = start_master(tmp, secret_file, tls)
            try:
                client_tls = None
                if tls is not None:  # a client as `ember submit` is: it verifies, no cert
                    client_dir = tmp / "client"
                    client_dir.mkdir()
                    (client_dir / "ca.pem").write_bytes((tls / "ca.pem").read_bytes())
                    client_tls = client_dir
                keys = load_keys(secret_file, client_tls)
                results[name] = asyncio.run(measure(port, keys, args.rounds))
            finally:
                proc.terminate()
                proc.wait(15)
    rows = []
    figures: dict[str, float] = {}
    for what in results["plain"]:
        plain, tls = results["plain"][what], results["tls"][what]
        for label, stat in (("median", statistics.median), ("p95", p95)):
            a, b = stat(plain) * 1000, stat(tls) * 1000
            figures[f"{what} {label} plain (ms)"] = a
            figures[f"{what} {label} tls (ms)"] = b
            rows.append([f"{what}, {label}", fmt(a), fmt(b), f"{b - a:+.3f}"])
    print(f"\n{args.rounds} rounds each, ms\n")
    print_table(["measurement", "plain", "TLS", "cost"], rows)
    save(args.json, rounds=args.rounds, figures=figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
