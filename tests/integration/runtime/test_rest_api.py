"""The REST submission API of a real master, with a real worker running what it submits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.procs import Cluster, MasterProc, ember, free_port, wait_for


def call(port: int, method: str, path: str, body: Any = None, token: str | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/submissions{path}", data=data,
                                     method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def create_body(resource: str, *args: str, **props: str) -> dict[str, Any]:
    return {"action": "CreateSubmissionRequest", "clientSparkVersion": "4.3.0",
            "appResource": resource, "appArgs": list(args), "mainClass": "",
            "sparkProperties": {"spark.driver.memory": "256m", **props},
            "environmentVariables": {"SPARK_GREETING": "hello"}}


def rest_master(cluster: Cluster, *extra: str) -> tuple[MasterProc, int]:
    port = free_port()
    master = cluster.master("--rest-port", str(port), *extra)
    return master, port


def test_create_status_kill_over_rest(cluster: Cluster, tmp_path: Path) -> None:
    master, port = rest_master(cluster)
    worker = cluster.worker(master.url)
    worker_id = master.wait_joined(worker)
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/sh\necho "$SPARK_GREETING $1"\nexec sleep 60\n')
    script.chmod(0o755)

    status, created = call(port, "POST", "/create",
                           create_body(f"file:{script}", "world", **{"spark.app.name": "job"}))
    assert status == 200, created
    assert created["action"] == "CreateSubmissionResponse" and created["success"] is True
    driver_id = created["submissionId"]
    assert created["message"] == f"Driver successfully submitted as {driver_id}"
    assert "serverSparkVersion" in created

    def running() -> dict[str, Any] | None:
        _, answer = call(port, "GET", f"/status/{driver_id}")
        return answer if answer.get("driverState") == "RUNNING" else None
    answer = wait_for(running, 10, "driver RUNNING over REST")
    assert answer["action"] == "SubmissionStatusResponse" and answer["success"] is True
    entry = master.worker_entry(worker_id)
    assert entry is not None
    assert (answer["workerId"], answer["workerHostPort"]) == (worker_id,
                                                             f"127.0.0.1:{entry['port']}")
    stdout = worker.work_dir / driver_id / "stdout"
    wait_for(lambda: stdout.read_text() == "hello world\n", 10, "the script's output")

    status, killed = call(port, "POST", f"/kill/{driver_id}")
    assert (status, killed["action"], killed["success"]) == (200, "KillSubmissionResponse", True)
    wait_for(lambda: call(port, "GET", f"/status/{driver_id}")[1].get("driverState") == "KILLED",
             10, "driver KILLED over REST")
    driver = next(d for d in master.json()["completeddrivers"] if d["id"] == driver_id)
    assert (driver["state"], driver["mainclass"]) == ("KILLED", "job")

    status, unknown = call(port, "GET", "/status/driver-nope")
    assert (status, unknown["success"]) == (200, False)
    status, cleared = call(port, "POST", "/clear")
    assert (status, cleared["action"], cleared["success"]) == (200, "ClearResponse", True)
    assert master.json()["completeddrivers"] == []
    assert call(port, "GET", "/readyz")[0] == 200


@pytest.mark.parametrize(("method", "path", "raw", "code", "words"), [
    ("POST", "/create", b"{not json", 400, "malformed JSON"),
    ("POST", "/create", json.dumps({"action": "CreateSubmissionRequest",
                                    "clientSparkVersion": "4.3.0",
                                    "sparkProperties": {}}).encode(), 400, "appResource"),
    ("POST", "/create", json.dumps({"action": "Launch", "clientSparkVersion": "4.3.0",
                                    "appResource": "/bin/true",
                                    "sparkProperties": {}}).encode(), 400, "Launch"),
    ("POST", "/create", json.dumps(create_body("/bin/true", **{"spark.driver.memory": "512"})
                                   ).encode(), 400, "spark.driver.memory"),
    ("POST", "/frobnicate", b"", 400, "specify one of"),
])
def test_malformed_requests_are_400_saying_what_is_wrong(
        cluster: Cluster, method: str, path: str, raw: bytes, code: int, words: str) -> None:
    master, port = rest_master(cluster)
    status, answer = call(port, method, path, raw=raw)
    assert (status, answer["action"]) == (code, "ErrorResponse")
    assert words in answer["message"]
    assert master.json()["activedrivers"] == []


def test_wrong_protocol_version_is_468(cluster: Cluster) -> None:
    _, port = rest_master(cluster)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/submissions/create",
                                     data=json.dumps(create_body("/bin/true")).encode(),
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    answer = json.load(refused.value)
    assert refused.value.code == 468
    assert answer["highestProtocolVersion"] == "v1" and "v2" in answer["message"]


def test_rest_needs_the_token_of_the_secret(cluster: Cluster, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    secret.chmod(0o600)
    master, port = rest_master(cluster, "--secret-file", str(secret))
    token = ember("rest-token", "--secret-file", str(secret)).stdout.strip()
    assert token.startswith("v2.") and len(token.split(".")[2]) == 64
    brief = ember("rest-token", "--secret-file", str(secret), "--ttl", "1").stdout.strip()

    status, answer = call(port, "POST", "/create", create_body("/bin/true"))
    assert status == 401 and "Bearer" in answer["message"]
    status, answer = call(port, "POST", "/create", create_body("/bin/true"),
                          token=f"v2.9999999999.{'0' * 64}")
    assert status == 401 and answer["message"] == "wrong token"
    time.sleep(1.1)
    status, answer = call(port, "POST", "/create", create_body("/bin/true"), token=brief)
    assert status == 401 and answer["message"].startswith("expired token")
    assert "0123456789abcdef" not in json.dumps(answer)
    assert master.json()["activedrivers"] == []

    status, answer = call(port, "POST", "/create", create_body("/bin/true"), token=token)
    assert status == 200 and answer["success"] is True
    assert "0123456789abcdef" not in master.proc.log() and token not in master.proc.log()


def test_rest_is_off_by_default(cluster: Cluster) -> None:
    master = cluster.master()
    time.sleep(0.3)  # the REST port, when on, is bound before the web UI answers
    assert "REST" not in master.proc.log()
    listening = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text()
    ports = {int(line.split()[1].rsplit(":", 1)[1], 16) for line in listening.splitlines()[1:]
             if line.split()[3] == "0A" and _owned_by(master.proc.pid, line.split()[9])}
    assert ports == {master.port, master.webui}


def _owned_by(pid: int, inode: str) -> bool:
    """Whether the socket with this inode is one of process ``pid``'s open files."""
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd) == f"socket:[{inode}]" for fd in fds.iterdir())


SPARK_SUBMIT = Path(os.environ.get("SPARK_HOME", "/nonexistent")) / "bin" / "spark-submit"


@pytest.mark.skipif(not SPARK_SUBMIT.exists() or not shutil.which("javac"),
                    reason="needs Apache Spark and a JDK: scripts/test sets up the locked Spark "
                           "(scripts/spark-env) and, as root, installs default-jdk-headless; "
                           "or set SPARK_HOME to a Spark 4 install")
def test_spark_submit_itself_submits_a_jar(cluster: Cluster, tmp_path: Path) -> None:
    source = tmp_path / "Hello.java"
    source.write_text('public class Hello { public static void main(String[] a) {'
                      ' System.out.println("Hello " + String.join(",", a)); } }\n')
    subprocess.run(["javac", "-d", str(tmp_path), str(source)], check=True)
    jar = tmp_path / "hello.jar"
    subprocess.run(["jar", "cf", str(jar), "-C", str(tmp_path), "Hello.class"], check=True)
    master, port = rest_master(cluster)
    worker = cluster.worker(master.url, memory="2g")
    master.wait_joined(worker)

    done = subprocess.run(
        [str(SPARK_SUBMIT), "--master", f"spark://127.0.0.1:{port}", "--deploy-mode", "cluster",
         "--conf", "spark.master.rest.enabled=true", "--driver-memory", "256m",
         "--class", "Hello", str(jar), "a", "b"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    driver_id = wait_for(lambda: next((d["id"] for d in master.json()["completeddrivers"]
                                       if d["state"] == "FINISHED"), None), 30,
                         "the jar's driver FINISHED")
    assert (worker.work_dir / driver_id / "stdout").read_text() == "Hello a,b\n"
    stderr = (worker.work_dir / driver_id / "stderr").read_text()
    assert stderr.startswith('Launch Command: "java" "-Xmx256m" "-cp"')
