"""The playbook's TLS and credential rotation, with a local inventory that turns TLS on: real
daemons under supervisor, HTTPS, certificates renewed, and a rotation with work running."""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.integration.playbook.test_local_playbook import Local, local_cluster
from tests.procs import ember, wait_for
from toolkit.ops.certs import Authority


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Local]:
    with local_cluster(tmp_path, ", tls: on") as running:
        yield running


def creds(local: Local) -> Path:
    return local.inventory.parent / "secret.tls"


def https_json(local: Local, cafile: Path) -> Any:
    context = ssl.create_default_context(cafile=str(cafile))
    url = f"https://127.0.0.1:{local.webui}/json"
    with urllib.request.urlopen(url, timeout=3, context=context) as response:
        return json.load(response)


def master_url(local: Local) -> str:
    port = local.inventory.read_text().split("port: ")[1].split(",")[0]
    return f"ember://127.0.0.1:{port}"


def client(local: Local, *args: str, secret: Path | None = None, tls: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    """`ember ARGS` as the operator: the inventory's secret and the cluster CA."""
    return ember(*args, env={
        "EMBER_MASTER_URL": master_url(local),
        "EMBER_SECRET_FILE": str(secret or local.inventory.parent / "secret"),
        "EMBER_TLS_DIR": str(tls or creds(local))})


def issuer(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).issuer.rfc4514_string()


def test_start_all_makes_a_ca_and_serves_https(secured: Local) -> None:
    started = secured.fab("start-all")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "made the cluster CA" in started.stdout
    tls = secured.home / "conf" / "tls"
    assert (tls / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (creds(secured) / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert not (tls / "ca-key.pem").exists()  # the CA's key never leaves the control machine
    assert https_json(secured, creds(secured) / "ca.pem")["aliveworkers"] == 2
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{secured.webui}/json", timeout=3)
    status = secured.fab("status")
    assert f"https://127.0.0.1:{secured.webui}" in status.stdout
    # a client that does not trust the cluster CA is refused by the client side itself
    other = Path(tempfile.mkdtemp(dir=secured.inventory.parent))
    (other / "ca.pem").write_bytes(Authority.create("other").pem)
    stranger = client(secured, "driver", "list", tls=other)
    assert stranger.returncode != 0
    assert "is not a host of this cluster" in stranger.stderr


def test_an_expiring_certificate_is_reissued_and_running_roles_reload_it(
        secured: Local) -> None:
    assert secured.fab("start-all").returncode == 0
    host = creds(secured) / "hosts" / "localhost"
    ca = Authority.load(creds(secured))
    names = x509.load_pem_x509_certificate((host / "cert.pem").read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    old = ca.issue([str(getattr(n, "value", n)) for n in names], days=30,
                   now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=25))
    (host / "cert.pem").write_bytes(old.cert)
    (host / "key.pem").write_bytes(old.key)
    again = secured.fab("start-all")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reissued the TLS certificate of localhost: it expires on" in again.stdout
    assert again.stdout.count("reloaded its keys") == 3
    served = ssl.get_server_certificate(("127.0.0.1", secured.webui))
    assert served.strip() == (secured.home / "conf" / "tls" / "cert.pem").read_text().strip()
    assert served.strip() != old.cert.decode().strip()
    assert https_json(secured, creds(secured) / "ca.pem")["aliveworkers"] == 2


APP = r'''
import asyncio, sys
from toolkit.runtime import messages as m
from toolkit.runtime.client import ApplicationClient

async def main(out):
    desc = m.ApplicationDescription(name="rotating", command=["sleep", "300"],
                                    memory_per_executor=64, max_cores=1)
    async with await ApplicationClient.register(desc) as app:  # the job's own credential
        open(out, "w").write(app.app_id)
        while True:
            try:
                await app.event()
            except ConnectionError as exc:
                open(out + ".lost", "w").write(str(exc))
                raise

asyncio.run(main(sys.argv[1]))
'''


def test_rotate_credentials_keeps_running_work(secured: Local, tmp_path: Path) -> None:
    assert secured.fab("start-all").returncode == 0
    old_secret = (secured.inventory.parent / "secret").read_text()
    old_ca = (creds(secured) / "ca.pem").read_bytes()
    saved = tmp_path / "old"
    saved.mkdir()
    (saved / "secret").write_text(old_secret)
    (saved / "secret").chmod(0o600)
    (saved / "ca.pem").write_bytes(old_ca)
    marker = tmp_path / "pid"
    submitted = client(secured, "submit", "--memory", "128m", "--", "sh", "-c",
                       f"echo $$ > {marker}; exec sleep 300")
    assert submitted.returncode == 0, submitted.stderr
    driver = submitted.stdout.strip()
    pid = wait_for(lambda: marker.exists() and marker.read_text().strip(), 20, "driver pid")
    # a driver whose application talks to the master with the job's credential over TLS
    script, app_file = tmp_path / "app.py", tmp_path / "app"
    script.write_text(APP)
    repo = Path(__file__).resolve().parents[3]
    assert client(secured, "submit", "--memory", "128m", "--env", f"PYTHONPATH={repo}", "--",
                  sys.executable, str(script), str(app_file)).returncode == 0
    app_id = wait_for(lambda: app_file.exists() and app_file.read_text(), 20, "the app")
    workers = {w["id"] for w in https_json(secured, creds(secured) / "ca.pem")["workers"]}

    rotated = secured.fab("rotate-credentials")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    for step in ("accept", "prove", "retire"):
        assert rotated.stdout.count(f"{step}: ") == 3, rotated.stdout
    assert "the old secret and CA are retired" in rotated.stdout

    assert (secured.inventory.parent / "secret").read_text() != old_secret
    assert len((secured.inventory.parent / "secret").read_text().split()) == 1
    assert (creds(secured) / "ca.pem").read_bytes() != old_ca
    assert (creds(secured) / "trusted.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 1
    assert issuer(secured.home / "conf" / "tls" / "cert.pem") != x509.load_pem_x509_certificate(
        old_ca).subject.rfc4514_string()

    def settled() -> Any:
        view = https_json(secured, creds(secured) / "ca.pem")
        alive = {w["id"] for w in view["workers"] if w["state"] == "ALIVE"}
        return view if alive == workers else None
    view = wait_for(settled, 20, "both workers ALIVE again")
    running = [d for d in view["activedrivers"] if d["id"] == driver]
    assert running and running[0]["state"] == "RUNNING"
    assert marker.read_text().strip() == pid  # the very same process: nothing relaunched
    assert Path(f"/proc/{pid}").exists()
    # the application reconnected with its rewritten credential and CA, and lives on
    apps = {a["id"]: a["state"] for a in view["activeapps"]}
    assert apps.get(app_id) in ("RUNNING", "WAITING"), (view["activeapps"], view["completedapps"])
    assert not Path(f"{app_file}.lost").exists(), Path(f"{app_file}.lost").read_text()
    status = client(secured, "driver", "status", driver)
    assert status.returncode == 0 and "state=RUNNING" in status.stdout

    # the old secret and the old CA are refused now
    stale = client(secured, "driver", "list", secret=saved / "secret")
    assert stale.returncode != 0 and "wrong cluster secret" in stale.stderr, stale.stderr
    stale_ca = client(secured, "driver", "list", tls=saved)
    assert stale_ca.returncode != 0 and "is not a host of this cluster" in stale_ca.stderr
