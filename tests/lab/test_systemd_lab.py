"""fab install-systemd and the systemd backend against a real systemd: a systemd-nspawn machine
reached over SSH like any host (tests/lab/container.py). Needs root and systemd-container."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.container import SystemdHost, missing_requirements
from tests.procs import cluster_ca, get_json, wait_for

ROOT = Path(__file__).resolve().parents[2]
FAB = ROOT / ".venv" / "bin" / "fab"
BASE_PYTHON = str(Path(__import__("sys").base_prefix) / "bin" / "python3")

pytestmark = pytest.mark.skipif(missing_requirements() is not None,
                                reason=f"systemd lab: {missing_requirements()}")


@dataclass
class Machine:
    host: SystemdHost
    workdir: Path

    def inventory(self, backend: str, recovery: str = "") -> Path:
        path = self.workdir / f"{backend}.yml"
        path.write_text(f"""{recovery}
cluster: {{name: sd, backend: {backend}, secret_file: {self.workdir}/secret}}
ssh: {{user: root, key_file: {self.host.key}, known_hosts: {self.host.known_hosts},
       connect_timeout: 5}}
defaults: {{ember_home: /opt/ember, nice: 5, stop_timeout: 5, restart_sec: 1, run_user: root}}
masters: [{{host: {self.host.address}, worker_timeout: 3}}]
workers: [{{host: {self.host.address}, instances: 2, cores: 1, memory: 512m}}]
""")
        return path

    def fab(self, backend: str, *args: str, recovery: str = ""
            ) -> subprocess.CompletedProcess[str]:
        argv = [str(FAB), "-r", str(ROOT), *args, "--inventory",
                str(self.inventory(backend, recovery))]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)

    def sh(self, command: str) -> str:
        return self.host.ssh(command, check=False).stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.sh(f"systemctl show --property MainPID --value {unit}") or 0)

    def json(self) -> Any:
        """The master's /json, over HTTPS (the container is not loopback: TLS is on)."""
        return get_json(f"https://{self.host.address}:8080/json",
                        context=cluster_ca(self.workdir / "secret"))

    def alive_workers(self) -> int:
        return int(self.json()["aliveworkers"])

    def ember_processes(self) -> list[str]:
        return [line for line in self.sh("ps -eo args").splitlines()
                if "-m toolkit" in line or "supervisord" in line]


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    workdir = Path(tempfile.mkdtemp(prefix="ember-sd-"))
    with SystemdHost(workdir, "emsd") as host:
        deployed = Machine(host, workdir)
        result = deployed.fab("systemd", "deploy", "--python", BASE_PYTHON)
        assert result.returncode == 0, result.stdout + result.stderr
        yield deployed


ROLE_UNITS = ["ember-master.service", "ember-worker@1.service", "ember-worker@2.service"]


def test_systemd_backend_install_run_restart_status_stop_uninstall(machine: Machine) -> None:
    installed = machine.fab("systemd", "install-systemd", "--now")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert machine.sh(f"systemctl is-enabled {' '.join(ROLE_UNITS)}").split() == ["enabled"] * 3
    assert machine.sh(f"systemctl is-active {' '.join(ROLE_UNITS)}").split() == ["active"] * 3
    wait_for(lambda: machine.alive_workers() == 2, 15, "both workers ALIVE")

    # Nice= from the inventory, and the pid file is systemd's MainPID
    pid = machine.main_pid("ember-worker@1.service")
    assert machine.sh(f"ps -o ni= -p {pid}") == "5"
    assert machine.sh("cat /opt/ember/run/ember-root-worker-1.pid") == str(pid)

    # kill -9: systemd restarts the worker (Restart=on-failure), and it registers again
    machine.sh(f"kill -9 {pid}")
    wait_for(lambda: machine.main_pid("ember-worker@1.service") not in (0, pid), 20,
             "a new worker 1 process")
    assert machine.sh("systemctl show --property NRestarts --value ember-worker@1") == "1"
    wait_for(lambda: machine.alive_workers() == 2, 20, "the restarted worker ALIVE")

    status = machine.fab("systemd", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert [(r["role"], r["instance"], r["daemon"], r["master_view"]) for r in rows] == [
        ("master", 1, "running", "ALIVE"), ("worker", 1, "running", "ALIVE"),
        ("worker", 2, "running", "ALIVE")]
    logs = machine.fab("systemd", "logs", "--role", "worker", "-n", "50", "--grep", "egister")
    assert logs.returncode == 0 and f"{machine.host.address}: worker 1: " in logs.stdout
    assert "ember-worker" in logs.stdout  # journalctl's lines: the journal is the log

    stopped = machine.fab("systemd", "stop-all")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert machine.sh(f"systemctl is-active {' '.join(ROLE_UNITS)}").split() == ["inactive"] * 3
    assert machine.ember_processes() == []

    started = machine.fab("systemd", "start-all")  # through systemctl
    assert started.returncode == 0, started.stdout + started.stderr
    assert machine.sh(f"systemctl is-active {' '.join(ROLE_UNITS)}").split() == ["active"] * 3

    removed = machine.fab("systemd", "uninstall-systemd")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert machine.sh("ls /etc/systemd/system | grep -c ember || true") == "0"
    assert machine.sh("find /etc/systemd/system -name 'ember*' | wc -l") == "0"
    assert machine.sh("systemctl list-units --all --plain --no-legend 'ember*'") == ""
    assert machine.ember_processes() == []


def test_supervisor_mode_brings_programs_back_with_supervisord(machine: Machine) -> None:
    installed = machine.fab("supervisor", "install-systemd", "--now")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert machine.sh("systemctl is-active ember-supervisord") == "active"
    started = machine.fab("supervisor", "start-all")
    assert started.returncode == 0, started.stdout + started.stderr
    supervisord = machine.main_pid("ember-supervisord.service")
    assert machine.sh("cat /opt/ember/run/supervisord.pid") == str(supervisord)

    # As after a reboot: systemd starts supervisord again, and it brings the roles back
    machine.sh("systemctl restart ember-supervisord")
    wait_for(lambda: machine.alive_workers() == 2, 30, "workers ALIVE after the restart")
    status = machine.fab("supervisor", "status")
    assert status.returncode == 0, status.stdout + status.stderr

    stopped = machine.fab("supervisor", "stop-all")  # supervisord is systemd's: it stays
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert machine.sh("systemctl is-active ember-supervisord") == "active"
    machine.sh("systemctl restart ember-supervisord")  # stopped roles do not come back
    assert machine.sh("ls /opt/ember/run/programs | wc -l") == "0"
    wait_for(lambda: machine.sh("ls /opt/ember/run/supervisor.sock"), 10, "supervisord up")
    assert not any("-m toolkit" in p for p in machine.ember_processes())

    removed = machine.fab("supervisor", "uninstall-systemd")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert machine.sh("find /etc/systemd/system -name 'ember*' | wc -l") == "0"
    assert machine.ember_processes() == []


def test_an_ensemble_server_runs_as_a_systemd_unit(machine: Machine) -> None:
    """recovery.ensemble with the systemd backend: ember-zookeeper.service, ready once the
    server serves, restarted by systemd when its JVM is killed; the master leads through
    it; stop-all and uninstall-systemd leave nothing."""
    recovery = f"recovery: {{mode: zookeeper, ensemble: [{machine.host.address}]}}"
    installed = machine.fab("systemd", "install-systemd", "--now", recovery=recovery)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    unit = "ember-zookeeper.service"
    assert machine.sh(f"systemctl is-enabled {unit}") == "enabled"
    assert machine.sh(f"systemctl is-active {unit} ember-master.service").split() == [
        "active", "active"]
    wait_for(lambda: machine.json()["status"] == "ALIVE",
             30, "the master leading through ZooKeeper")
    rows = json.loads(machine.fab("systemd", "status", "--json", recovery=recovery).stdout)
    assert [(r["role"], r["daemon"], r["master_view"]) for r in rows][:2] == [
        ("zookeeper", "running", "STANDALONE"), ("master", "running", "ALIVE")]

    wrapper = machine.main_pid(unit)
    java = machine.sh(f"pgrep -P {wrapper}")
    machine.sh(f"kill -9 {java}")  # the server dies: its wrapper exits 1, systemd restarts it
    wait_for(lambda: machine.main_pid(unit) not in (0, wrapper), 30, "a new server")
    assert machine.sh(f"systemctl show --property NRestarts --value {unit}") == "1"
    wait_for(lambda: json.loads(machine.fab("systemd", "status", "--json",
                                            recovery=recovery).stdout)[0]["ok"], 60,
             "the server serving again")

    stopped = machine.fab("systemd", "stop-all", recovery=recovery)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert machine.sh(f"systemctl is-active {unit}") == "inactive"
    removed = machine.fab("systemd", "uninstall-systemd", recovery=recovery)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert machine.ember_processes() == []
    assert "QuorumPeerMain" not in machine.sh("ps -eo args")


def test_roles_and_jobs_run_as_an_unprivileged_user_by_default(machine: Machine) -> None:
    """No run_user: install-systemd makes the system user `ember` and runs master, workers and
    every job as it; the files the playbook installs (as root) are handed to it. A Python the
    user cannot run is named before anything starts."""
    machine.sh("userdel ember >/dev/null 2>&1; true")
    inventory = machine.inventory("systemd").read_text().replace(", run_user: root}", "}")
    assert "run_user" not in inventory
    path = machine.workdir / "as-ember.yml"
    path.write_text(inventory)

    def fab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(FAB), "-r", str(ROOT), *args, "--inventory", str(path)],
                              capture_output=True, text=True, timeout=300, check=False)

    base = Path(BASE_PYTHON).resolve()
    closed = [p for p in base.parents if str(p) != "/" and not int(
        machine.sh(f"stat -c %a {p}"), 8) & 0o001]
    try:
        if closed:  # this machine's Python lives under /root (pyenv), bound into the container
            refused = fab("install-systemd", "--now")
            assert refused.returncode != 0
            assert "the run user 'ember' cannot run" in refused.stdout, refused.stdout
            assert f"{closed[-1]} is closed to other users" in refused.stdout
            for parent in closed:  # as /usr/bin/python3 is on a real host
                machine.sh(f"chmod o+x {parent}")
        installed = fab("install-systemd", "--now")
        assert installed.returncode == 0, installed.stdout + machine.sh(
            "journalctl -u ember-master -n 20 --no-pager")
        assert machine.sh("id -u ember") and machine.sh("getent passwd ember").endswith(
            "/usr/sbin/nologin")
        wait_for(lambda: machine.alive_workers() == 2, 30, "both workers ALIVE")
        users = {machine.sh(f"ps -o user= -p {machine.main_pid(unit)}")
                 for unit in ROLE_UNITS}
        assert users == {"ember"}
        for owned in ("/opt/ember/conf/secret", "/opt/ember/conf/tls/key.pem"):
            assert machine.sh(f"stat -c %U:%a {owned}") == "ember:600"
        master = f"ember://{machine.host.address}:7077"
        driver = machine.sh(f"runuser -u ember -- /opt/ember/venv/bin/python -m toolkit submit "
                            f"--master {master} "
                            f"--secret-file /opt/ember/conf/secret --tls-dir /opt/ember/conf/tls "
                            f"--memory 64m --wait -- "
                            f"sh -c 'id -un; env'").splitlines()[0]
        out = machine.sh(f"cat /opt/ember/work/{driver}/stdout").splitlines()
        assert out[0] == "ember"
        assert not any(line.startswith("EMBER_SECRET_FILE=") for line in out)
        assert any(line.startswith("EMBER_CREDENTIAL_FILE=") for line in out)
    finally:
        fab("uninstall-systemd")
