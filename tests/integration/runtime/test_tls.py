"""TLS between real processes on 127.0.0.1: an on-path relay can neither read nor inject, a
worker registers only with its host's certificate, strangers' certificates are refused, and
the web UI and REST ports speak HTTPS only."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.procs import Cluster, ember, free_port, wait_for
from toolkit.ops.certs import Authority
from toolkit.runtime import messages as m
from toolkit.runtime import wire

SECRET = "correct-horse-battery-staple-0123456789"


def secret_file(tmp: Path) -> str:
    path = tmp / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return str(path)


def tls_dir(path: Path, ca: Authority, names: list[str], trust: Authority | None = None
            ) -> Path:
    """A host's TLS directory: ``trust``'s certificate (default ``ca``'s) and a key and
    certificate for ``names`` issued by ``ca``."""
    path.mkdir(parents=True)
    issued = ca.issue(names)
    (path / "ca.pem").write_bytes((trust or ca).pem)
    (path / "cert.pem").write_bytes(issued.cert)
    (path / "key.pem").write_bytes(issued.key)
    (path / "key.pem").chmod(0o600)
    return path


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority.create("test")


def https_json(url: str, cafile: Path, headers: dict[str, str] | None = None) -> Any:
    context = ssl.create_default_context(cafile=str(cafile))
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=3, context=context) as response:
        return json.load(response)


class Relay:
    """An attacker on the path from a worker to its master: it relays every byte both ways,
    keeps what the master sends, and can write its own bytes toward the worker."""

    def __init__(self, master_port: int) -> None:
        self.master_port = master_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.to_worker = bytearray()
        self.worker_side: socket.socket | None = None
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                worker, _ = self.listener.accept()
            except OSError:
                return
            master = socket.create_connection(("127.0.0.1", self.master_port))
            self.sockets += [worker, master]
            self.worker_side = worker
            threading.Thread(target=self._pipe, args=(worker, master, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(master, worker, True),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, keep: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self.lock:
                    if keep:
                        self.to_worker += data
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def inject(self, data: bytes) -> None:
        assert self.worker_side is not None
        with self.lock:
            self.worker_side.sendall(data)

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_an_on_path_relay_reads_and_injects_only_without_tls(
        cluster: Cluster, ca: Authority, tls: bool) -> None:
    """The issue's attack: relay the handshake unchanged, then inject a LaunchDriver toward
    the worker. In plain TCP it runs and the relay reads every command (the control, which
    shows the relay works); with TLS, neither."""
    key = secret_file(cluster.tmp)
    flags = ["--secret-file", key]
    if tls:
        flags += ["--tls-dir", str(tls_dir(cluster.tmp / "tls", ca, ["127.0.0.1"]))]
    master = cluster.master(*flags)
    relay = Relay(master.port)
    try:
        worker = cluster.worker(f"ember://127.0.0.1:{relay.port}", *flags)
        master.wait_joined(worker)

        token = f"sniff-{secrets.token_hex(8)}"
        env = {"EMBER_MASTER_URL": master.url, "EMBER_SECRET_FILE": key}
        if tls:
            env["EMBER_TLS_DIR"] = str(cluster.tmp / "tls")
        done = ember("submit", "--wait", "--memory", "128m", "--env", f"TOKEN={token}-env",
                     "--", "sh", "-c", f": {token}", env=env)
        assert done.returncode == 0, done.stderr
        seen = bytes(relay.to_worker)
        assert (token.encode() in seen) is not tls
        assert (f"{token}-env".encode() in seen) is not tls

        marker = cluster.tmp / "injected"
        relay.inject(wire.encode_frame(m.LaunchDriver(
            "driver-20991231000000-9999", m.DriverDescription(["touch", str(marker)],
                                                              memory=16))))
        if tls:
            wait_for(lambda: "lost" in worker.proc.log(), 10, "the worker drops the link")
            time.sleep(1.0)
            assert not marker.exists()
            assert "driver-20991231000000-9999" not in worker.proc.log()
        else:
            wait_for(marker.exists, 10, "the injected command to run")
    finally:
        relay.close()


def test_a_worker_registers_only_over_its_hosts_certificate(
        cluster: Cluster, ca: Authority) -> None:
    key = secret_file(cluster.tmp)
    good = tls_dir(cluster.tmp / "master-tls", ca, ["127.0.0.1"])
    master = cluster.master("--secret-file", key, "--tls-dir", str(good))
    elsewhere = tls_dir(cluster.tmp / "worker-tls", ca, ["worker7.example.com"])
    worker = cluster.worker(master.url, "--secret-file", key, "--tls-dir", str(elsewhere))
    wait_for(lambda: "is not for host 127.0.0.1" in worker.proc.log(), 15, "the refusal")
    assert "the certificate of 127.0.0.1" in master.proc.log()
    assert master.json()["workers"] == []


def test_a_certificate_of_another_ca_is_refused_both_ways(cluster: Cluster,
                                                          ca: Authority) -> None:
    key = secret_file(cluster.tmp)
    good = tls_dir(cluster.tmp / "master-tls", ca, ["127.0.0.1"])
    master = cluster.master("--secret-file", key, "--tls-dir", str(good))
    rogue = Authority.create("rogue")
    # trusts the cluster's CA, presents a certificate of its own CA
    cluster.worker(master.url, "--secret-file", key, "--tls-dir",
                               str(tls_dir(cluster.tmp / "a", rogue, ["127.0.0.1"], trust=ca)))
    wait_for(lambda: "TLS handshake failed" in master.proc.log(), 15, "the master's refusal")
    # trusts only its own CA: it will not talk to the cluster's master
    stranger = cluster.worker(master.url, "--secret-file", key, "--tls-dir",
                              str(tls_dir(cluster.tmp / "b", rogue, ["127.0.0.1"])))
    wait_for(lambda: "is not a host of this cluster" in stranger.proc.log(), 15, "refusal")
    assert master.json()["workers"] == []


def test_web_ui_and_rest_speak_https_only(cluster: Cluster, ca: Authority) -> None:
    key = secret_file(cluster.tmp)
    tls = tls_dir(cluster.tmp / "tls", ca, ["127.0.0.1"])
    rest = free_port()
    master = cluster.master("--secret-file", key, "--tls-dir", str(tls), "--rest-port",
                            str(rest))
    worker = cluster.worker(master.url, "--secret-file", key, "--tls-dir", str(tls))
    master.wait_joined(worker)
    assert master.ui.startswith("https:") and master.json()["aliveworkers"] == 1
    token = ember("rest-token", "--secret-file", key).stdout.strip()
    ready = https_json(f"https://127.0.0.1:{rest}/v1/submissions/readyz", tls / "ca.pem",
                       {"Authorization": f"Bearer {token}"})
    assert ready["success"] is True
    for port in (master.webui, worker.webui, rest):
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=3)
    assert "web UI at https://127.0.0.1:" in master.proc.log()
    assert "REST submission API at https://" in master.proc.log()


JOB = r'''
import asyncio, json, os, subprocess, sys
from toolkit.runtime import messages as m, wire
from toolkit.runtime.config import keys_from_env

out, worker_port, victim, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
found = {"secret_in_env": any(secret in v for v in os.environ.values()),
         "secret_file": "EMBER_SECRET_FILE" in os.environ,
         "credential_mode": oct(os.stat(os.environ["EMBER_CREDENTIAL_FILE"]).st_mode & 0o777),
         "secret_in_credential": secret in open(os.environ["EMBER_CREDENTIAL_FILE"]).read()}
keys = keys_from_env()
master_host, _, master_port = os.environ["EMBER_MASTER_URL"][8:].rpartition(":")

async def take_over_worker():
    try:
        conn = await wire.connect("127.0.0.1", worker_port, keys, wire.TO_CLIENT)
    except Exception as exc:
        return f"refused: {exc}"
    conn.send(m.ReconnectWorker("ember://127.0.0.1:1"))
    async for reply in conn.messages():
        return f"answered {type(reply).__name__}"
    return "closed"

async def register_as_worker():
    conn = await wire.connect(master_host, int(master_port), keys, wire.TO_WORKER)
    conn.send(m.RegisterWorker("worker-20990101000000-127.0.0.1-1", "127.0.0.1", 1, 1, 64,
                               "http://x", os.environ["EMBER_MASTER_URL"]))
    async for reply in conn.messages():
        return f"answered {type(reply).__name__}: {getattr(reply, 'message', '')}"
    return "closed"

found["worker"] = asyncio.run(take_over_worker())
found["register"] = asyncio.run(register_as_worker())

def ember(*args):
    done = subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True,
                          text=True)
    return done.returncode, done.stdout + done.stderr

found["kill_other"] = ember("driver", "kill", victim)
found["me"] = os.environ["EMBER_DRIVER_ID"]
found["own_status"] = ember("driver", "status", found["me"])
code, child = ember("submit", "--memory", "16m", "--", "sleep", "60")
found["child"] = (code, child.strip())
found["listed"] = ember("driver", "list")
found["kill_all"] = ember("driver", "kill-all")
found["kill_child"] = ember("driver", "kill", child.strip())
subprocess.run(["cp", "-p", os.environ["EMBER_CREDENTIAL_FILE"], out + ".credential"])
open(out, "w").write(json.dumps(found))
'''


def test_a_job_holds_only_its_own_credential_and_cannot_take_over_a_worker(
        cluster: Cluster) -> None:
    key = secret_file(cluster.tmp)
    master = cluster.master("--secret-file", key)
    worker = cluster.worker(master.url, "--secret-file", key)
    master.wait_joined(worker)
    env = {"EMBER_MASTER_URL": master.url, "EMBER_SECRET_FILE": key}
    victim = ember("submit", "--memory", "64m", "--", "sleep", "300", env=env).stdout.strip()
    script, out = cluster.tmp / "job.py", cluster.tmp / "found.json"
    script.write_text(JOB)
    worker_port = master.json()["workers"][0]["port"]
    job = ember("submit", "--wait", "--memory", "64m", "--env",
                f"PYTHONPATH={Path(__file__).resolve().parents[3]}", "--", sys.executable,
                str(script), str(out), str(worker_port), victim, SECRET, env=env)
    assert job.returncode == 0, job.stderr + worker.proc.log()
    found = json.loads(out.read_text())
    assert found["secret_in_env"] is False and found["secret_file"] is False
    assert found["secret_in_credential"] is False
    assert found["credential_mode"] == "0o600"
    assert found["worker"].startswith("refused") or found["worker"] == "closed", found
    assert "a job's credential" in worker.proc.log()
    assert found["register"].startswith("answered RegisterWorkerFailed: RegisterWorker is "
                                        "not allowed with a job's credential"), found
    assert "RegisterWorker is not allowed with a job's credential" in master.proc.log()
    assert found["kill_other"][0] != 0
    assert "may act only on itself and the drivers it submitted" in found["kill_other"][1]
    assert found["own_status"][0] == 0 and "state=RUNNING" in found["own_status"][1]
    assert found["child"][0] == 0
    assert found["kill_child"][0] == 0, found
    # its list holds itself and what it submitted, not the other user's driver
    listed = {line.split()[0] for line in found["listed"][1].splitlines()}
    assert found["listed"][0] == 0 and listed == {found["me"], found["child"][1]}, found
    assert found["kill_all"][0] != 0
    assert "RequestKillAllDrivers is not allowed with a job's credential" in found["kill_all"][1]
    status = ember("driver", "status", victim, env=env)
    assert "state=RUNNING" in status.stdout  # the other user's driver still runs
    assert [w["id"] for w in master.json()["workers"]] == [worker.id]
    # the job ended: its credential is gone from its work dir and no longer honoured
    assert not list(worker.work_dir.glob("driver-*/.ember-credential")) or all(
        d.name == victim for d in worker.work_dir.glob("driver-*")
        if (d / ".ember-credential").exists())
    kept = Path(str(out) + ".credential")
    late = ember("driver", "status", victim, env={
        "EMBER_MASTER_URL": master.url, "EMBER_CREDENTIAL_FILE": str(kept),
        "EMBER_SECRET_FILE": ""})
    assert "no longer valid" in late.stdout + late.stderr
