"""The fab tasks with a local inventory: no SSH, no root, real daemons under supervisor."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import free_port, free_ports, get_json

ROOT = Path(__file__).resolve().parents[3]
FAB = Path(sys.executable).parent / "fab"


@dataclass
class Local:
    inventory: Path
    home: Path
    webui: int

    def fab(self, *args: str, inventory: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(FAB), "-r", str(ROOT), *args, "--inventory",
                               str(inventory or self.inventory)], capture_output=True,
                              text=True, timeout=180, check=False,
                              env={**os.environ, **env} if env else None)

    def json(self) -> dict:  # type: ignore[type-arg]
        return get_json(f"http://127.0.0.1:{self.webui}/json")  # type: ignore[no-any-return]


@contextmanager
def local_cluster(tmp_path: Path, cluster: str = "") -> Iterator[Local]:
    """A local inventory (a master and two workers under supervisor, free ports, run as
    root: this machine's Python may be under /root); everything stopped at the end.
    ``cluster``: more keys of its cluster section."""
    home = Path(tempfile.mkdtemp(prefix="el-", dir="/tmp"))  # short: supervisor's socket
    webui, port = free_port(), free_port()
    workers_webui = free_ports(2, avoid=(webui, port))  # instance 2 takes the next one
    inventory = tmp_path / "local.yml"
    inventory.write_text(f"""
cluster: {{name: t, backend: supervisor, secret_file: {tmp_path}/secret{cluster}}}
defaults: {{ember_home: {home}, stop_timeout: 5, run_user: root}}
masters: [{{host: localhost, port: {port}, webui_port: {webui}}}]
workers:
  - {{host: localhost, instances: 2, cores: 1, memory: 512m,
     worker_webui_port: {workers_webui}}}
""")
    running = Local(inventory, home, webui)
    try:
        yield running
    finally:
        running.fab("stop-all")
        _kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    with local_cluster(tmp_path) as running:
        yield running


def _kill_leftovers(home: Path) -> None:
    """Whatever stop-all left (it may be the code under test that broke): the processes of
    this test's pid files, by pid, supervisord first so that it restarts nothing."""
    for pid_file in sorted(home.rglob("*.pid"), key=lambda p: "supervisord" not in p.name):
        try:
            pid = int(pid_file.read_text().split()[0])
            if str(home) in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


def test_start_all_status_logs_stop_all(local: Local) -> None:
    started = local.fab("start-all")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "localhost: master 1: ready as process" in started.stdout
    assert "localhost: worker 2: ready as process" in started.stdout
    assert "waiting for workers: 2 of 2 ALIVE in the master's view" in started.stdout
    assert local.json()["aliveworkers"] == 2
    secret = Path(local.inventory.parent / "secret")
    assert (secret.stat().st_mode & 0o777) == 0o600
    conf = local.home / "conf"
    assert ((conf / "secret").stat().st_mode & 0o777) == 0o600
    env_file = (conf / "ember-env.sh").read_text()
    assert "EMBER_MASTER_URL=ember://127.0.0.1:" in env_file
    assert secret.read_text().strip() not in started.stdout + env_file

    # an operator's http_proxy is not on the way to the masters (nothing listens on port 9)
    status = local.fab("status", "--json", env={"http_proxy": "http://127.0.0.1:9",
                                                "https_proxy": "http://127.0.0.1:9"})
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert [(r["role"], r["instance"], r["daemon"], r["master_view"]) for r in rows] == [
        ("master", 1, "running", "ALIVE"), ("worker", 1, "running", "ALIVE"),
        ("worker", 2, "running", "ALIVE")]
    assert rows[1]["cores"] == "0/1" and rows[1]["memory"] == "0/512m"

    logs = local.fab("logs", "-n", "2", "--role", "worker")
    assert logs.returncode == 0
    assert logs.stdout.count("localhost: worker 1: ") == 2
    assert "master 1" not in logs.stdout

    again = local.fab("start-all")
    assert again.returncode == 0 and again.stdout.count("already running") == 3

    stopped = local.fab("stop-all")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert local.fab("status").returncode == 1
    assert not list((local.home / "run").glob("*.pid"))


def test_limit_to_hosts_and_roles(local: Local) -> None:
    assert local.fab("start-master").returncode == 0
    status = local.fab("status", "--roles", "master")
    assert status.returncode == 0 and "worker" not in status.stdout
    unknown = local.fab("status", "--hosts", "nowhere")
    assert unknown.returncode == 2 and "no host 'nowhere' in the inventory" in unknown.stderr


def test_start_failure_is_reported_with_the_log_tail(local: Local) -> None:
    import socket

    port = int(local.inventory.read_text().split("port: ")[1].split(",")[0])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = local.fab("start-all")
    assert result.returncode == 1
    assert "localhost: master 1: failed to start" in result.stdout
    assert f"master cannot listen on 127.0.0.1:{port}" in result.stdout
    assert "localhost: worker 1: not started: no master is up" in result.stdout


def test_render_writes_what_hosts_would_get(local: Local, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    result = subprocess.run([str(FAB), "-r", str(ROOT), "render", "--inventory",
                             str(local.inventory), "--out", str(out)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    env_file = (out / "localhost" / "ember-env.sh").read_text()
    assert f"EMBER_HOME={local.home}" in env_file
    commands = (out / "localhost" / "commands.txt").read_text().splitlines()
    assert len(commands) == 3 and commands[0].endswith("daemon start master 1")
    ident = getpass.getuser()
    program = (out / "localhost" / "supervisor" / "programs" /
               f"ember-{ident}-worker-2.conf").read_text()
    command = next(line for line in program.splitlines() if line.startswith("command="))
    nice, _, _, python, *rest = command.removeprefix("command=").split()[:9]
    assert nice == shutil.which("nice")
    assert Path(python).resolve() == Path(sys.executable).resolve()  # python or python3
    assert rest == ["-m", "toolkit", "worker", "--pid-file",
                    f"{local.home}/run/ember-{ident}-worker-2.pid"]
    assert f"stdout_logfile={local.home}/logs/ember-{ident}-worker-2-localhost.out" in program
    supervisord = (out / "localhost" / "supervisor" / "supervisord.conf").read_text()
    assert f"file={local.home}/run/supervisor.sock" in supervisord
    unit = (out / "localhost" / "systemd" / "ember-supervisord.service").read_text()
    assert f"-m supervisor.supervisord -n -c {local.home}/run/supervisord.conf" in unit
    assert not list(local.home.rglob("*.conf"))  # nothing was written to the host itself
    assert not (local.home / "conf").exists()  # render touches no host


def test_doctor_on_a_local_host(local: Local) -> None:
    result = local.fab("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "localhost: doctor: local host (no SSH), python 3." in result.stdout
    assert "toolkit 0.1.0, packages as locked" in result.stdout and "ports free" in result.stdout
    assert local.fab("start-master").returncode == 0
    busy = local.fab("doctor")
    assert busy.returncode == 0 and "ports in use by running ember roles" in busy.stdout


def test_bad_inventory_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("masters: [localhost]\nworkers: [{host: localhost, memory: lots}]\n")
    result = subprocess.run([str(FAB), "-r", str(ROOT), "start-all", "--inventory", str(bad)],
                            capture_output=True, text=True, check=False,
                            env={**os.environ})
    assert result.returncode == 2
    assert (f"{bad}: workers host localhost.memory: 'lots' is not a memory size like 512m or 2g"
            in result.stderr)


def test_a_start_given_no_time_is_refused_before_any_host_is_touched(local: Local) -> None:
    result = local.fab("start-all", "--wait", "0")
    assert result.returncode == 2
    assert "error: --wait must be more than 0 seconds, not 0" in result.stderr
    assert local.fab("status").returncode == 1  # nothing was started


def test_fab_help_documents_task_options() -> None:
    result = subprocess.run([str(FAB), "-r", str(ROOT), "--help", "logs"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0
    for option in ("--follow", "--grep", "--hosts", "--inventory", "-n"):
        assert option in result.stdout


def test_logs_follow_streams_new_lines_and_serial_start(local: Local) -> None:
    started = local.fab("start-all", "--serial")
    assert started.returncode == 0, started.stdout + started.stderr
    follower = subprocess.Popen([str(FAB), "-r", str(ROOT), "logs", "--follow", "-n", "1",
                                 "--role", "worker", "--inventory", str(local.inventory)],
                                stdout=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        import threading

        reader = threading.Thread(target=lambda: lines.extend(follower.stdout or []),
                                  daemon=True)
        reader.start()
        from tests.procs import wait_for

        wait_for(lambda: len(lines) >= 2, 15, "the last line of each worker log")
        assert local.fab("stop-workers").returncode == 0
        wait_for(lambda: any("worker 1: " in x and "Received SIGTERM" in x for x in lines), 15,
                 "the stop streamed from worker 1's log")
    finally:
        follower.terminate()
        follower.wait(10)


def test_a_bad_grep_pattern_is_named_before_any_host_is_asked(local: Local) -> None:
    result = local.fab("logs", "--grep", "(")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == ("error: --grep '(' is not a regular expression: "
                                     "missing ), unterminated subpattern at position 0")
    assert result.stdout == ""  # no host was asked
    daemon = subprocess.run([sys.executable, "-m", "toolkit", "daemon", "logs", "worker",
                             "--grep", "a[b"], capture_output=True, text=True, check=False)
    assert daemon.returncode == 2
    assert ("argument --grep: 'a[b' is not a regular expression: unterminated character set"
            in daemon.stderr) and "Traceback" not in daemon.stderr


@pytest.mark.skipif(Path("/run/systemd/system").exists(),
                    reason="systemd runs on this machine: installing here would be for real")
def test_install_systemd_where_systemd_does_not_run_writes_nothing(local: Local) -> None:
    result = local.fab("install-systemd")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "localhost: master: failed (exit 1)" in result.stdout
    assert "systemd is not running here" in result.stdout
    assert not (local.home / "conf").exists()  # no ember-env.sh, no secret, nothing


def test_restart_all_counts_both_halves_and_takes_wait(local: Local) -> None:
    assert local.fab("start-all").returncode == 0
    before = {w["id"] for w in local.json()["workers"] if w["state"] == "ALIVE"}
    result = local.fab("restart-all", "--wait", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "localhost: worker 1: stopping worker 1" in result.stdout
    assert "localhost: worker 1: ready as process" in result.stdout
    assert "restart-all: all 6 succeeded" in result.stdout  # 3 stopped, 3 started
    after = {w["id"] for w in local.json()["workers"] if w["state"] == "ALIVE"}
    assert len(after) == 2 and not after & before


def test_ember_help_says_what_the_command_is_for() -> None:
    done = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True,
                          text=True, check=True)
    assert "Run Ember, a Spark-standalone-style cluster" in done.stdout
    assert "Thin" not in done.stdout and "resolve defaults" not in done.stdout


def test_status_with_a_frozen_supervisord_is_bounded_and_keeps_every_row(local: Local) -> None:
    assert local.fab("start-all").returncode == 0
    supervisord = int(next(local.home.rglob("supervisord.pid")).read_text())
    os.kill(supervisord, signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        result = local.fab("status", "--json")
        took = time.monotonic() - started
    finally:
        os.kill(supervisord, signal.SIGCONT)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert [(r["role"], r["instance"], r["daemon"], r["ok"]) for r in rows] == [
        ("master", 1, "unsupervised", False), ("worker", 1, "unsupervised", False),
        ("worker", 2, "unsupervised", False)]
    assert all(r["detail"] == "supervisord does not answer within 5 s" for r in rows)
    assert took < 30
    table = local.fab("status")
    assert table.returncode == 0, table.stdout + table.stderr  # answers again, all supervised


def test_a_killed_supervisord_shows_unsupervised_roles_and_start_all_says_so(
        local: Local) -> None:
    assert local.fab("start-all").returncode == 0
    supervisord = int(next(local.home.rglob("supervisord.pid")).read_text())
    os.kill(supervisord, signal.SIGKILL)  # its roles keep running, unsupervised
    time.sleep(0.2)
    status = local.fab("status", "--json")
    assert status.returncode == 1
    rows = json.loads(status.stdout)
    # every role whose process still runs is reported unsupervised (once, under a loaded
    # suite, one role read "stopped" here: the rows say which, should it happen again)
    running = [r for r in rows if r["pid"] and Path(f"/proc/{r['pid']}").exists()]
    assert running and all(r["daemon"] == "unsupervised" for r in running), rows
    role, instance = running[-1]["role"], running[-1]["instance"]
    again = local.fab("start-all")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (f"localhost: {role} {instance}: already running as process {running[-1]['pid']}, "
            f"but supervisor does not supervise it (" in again.stdout
            and "), so a crash would not be restarted; `ember daemon restart` or "
                "`fab restart-all` puts it back under supervision" in again.stdout), again.stdout
    assert local.fab("restart-all").returncode == 0
    status = local.fab("status", "--json")
    assert status.returncode == 0, status.stdout
    assert {r["daemon"] for r in json.loads(status.stdout)} == {"running"}


def test_start_workers_wait_bounds_the_run_and_stops_what_failed(local: Local) -> None:
    assert local.fab("start-master").returncode == 0
    master = int(next(local.home.rglob("ember-*-master-1.pid")).read_text())
    os.kill(master, signal.SIGSTOP)  # workers connect but can never register
    try:
        result = local.fab("start-workers", "--wait", "4")
    finally:
        os.kill(master, signal.SIGCONT)
    assert result.returncode == 1, result.stdout + result.stderr
    # each start gave up within the 4 s of --wait, not its own start timeout (30 s)
    given = [float(t) for t in re.findall(r"not ready after ([\d.]+) s", result.stdout)]
    assert len(given) == 2 and all(t <= 4 for t in given), result.stdout
    assert result.stdout.count("was stopped") == 2, result.stdout
    assert not list(local.home.rglob("ember-*-worker-*.pid"))  # nothing left retrying
    status = local.fab("status", "--json")
    assert [r["daemon"] for r in json.loads(status.stdout) if r["role"] == "worker"] == [
        "stopped", "stopped"]


def test_inventory_from_the_environment(local: Local) -> None:
    result = subprocess.run([str(FAB), "-r", str(ROOT), "render", "--out",
                             str(local.home / "r")], capture_output=True, text=True,
                            env={**os.environ, "EMBER_INVENTORY": str(local.inventory)},
                            check=False)
    assert result.returncode == 0, result.stderr
    assert f"EMBER_HOME={local.home}" in (local.home / "r" / "localhost" /
                                           "ember-env.sh").read_text()


def test_work_runs_on_a_started_cluster_with_its_secret(local: Local, tmp_path: Path) -> None:
    rest = free_port()
    text = local.inventory.read_text().replace("webui_port: ", f"rest_port: {rest}, webui_port: ",
                                               1)
    local.inventory.write_text(text.replace("memory: 512m", "memory: 512m, cleanup_ttl: 3600"))
    started = local.fab("start-all")
    assert started.returncode == 0, started.stdout + started.stderr
    state = local.json()
    secret = str(local.inventory.parent / "secret")
    example = ROOT / "examples" / "pi.py"

    def ember(*args: str, secret_file: str | None = secret) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "EMBER_SECRET_FILE"}
        if secret_file:
            env["EMBER_SECRET_FILE"] = secret_file
        return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True,
                              text=True, env=env, timeout=120, check=False)

    refused = ember("submit", "--master", state["url"], "--", "true", secret_file=None)
    assert refused.returncode == 1 and "secret" in refused.stderr
    done = ember("submit", "--master", state["url"], "--wait", "--memory", "128m", "--",
                 sys.executable, str(example), "--samples", "50000", "--max-cores", "2",
                 "--executor-memory", "128")
    assert done.returncode == 0, done.stderr
    driver_id = done.stdout.strip()
    output = next(local.home.glob(f"work/{driver_id}/stdout")).read_text()
    assert "Pi is roughly 3.1" in output  # the driver holds one worker's only core: 1 executor

    token = ember("rest-token").stdout.strip()
    url = f"http://127.0.0.1:{rest}/v1/submissions/status/{driver_id}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.load(answer)["driverState"] == "FINISHED"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(url, timeout=5)
    assert anonymous.value.code == 401


def test_an_ensemble_the_playbook_runs_starts_first_serves_the_master_and_stops_last(
        local: Local) -> None:
    """recovery.ensemble on the one local host: a real ZooKeeper server under supervisor,
    with its pid file and log, and a master that leads through it."""
    if not Path("/usr/share/java/zookeeper.jar").exists():
        pytest.skip("needs ZooKeeper: scripts/test installs Debian's zookeeper")
    client = free_ports(3, avoid=(local.webui,))
    peer, election = client + 1, client + 2
    local.inventory.write_text(local.inventory.read_text() + (
        f"recovery: {{mode: zookeeper, root: /t, ensemble: {{hosts: [localhost], client_port: "
        f"{client}, peer_port: {peer}, election_port: {election}}}}}\n"))
    started = local.fab("start-all")
    assert started.returncode == 0, started.stdout + started.stderr
    lines = started.stdout.splitlines()
    zookeeper_ready = next(n for n, line in enumerate(lines)
                           if "localhost: zookeeper 1: ready as process" in line)
    master_ready = next(n for n, line in enumerate(lines) if "master 1: ready" in line)
    assert zookeeper_ready < master_ready
    assert local.json()["status"] == "ALIVE"
    env_file = (local.home / "conf" / "ember-env.sh").read_text()
    assert f"EMBER_ZOOKEEPER_URL=127.0.0.1:{client}" in env_file
    assert f"EMBER_ZOOKEEPER_SERVERS=127.0.0.1:{peer}:{election}" in env_file

    rows = json.loads(local.fab("status", "--json").stdout)
    assert [(r["role"], r["daemon"], r["master_view"], r["ok"]) for r in rows] == [
        ("zookeeper", "running", "STANDALONE", True), ("master", "running", "ALIVE", True),
        ("worker", "running", "ALIVE", True), ("worker", "running", "ALIVE", True)]
    zookeeper_pid = rows[0]["pid"]
    logs = local.fab("logs", "-n", "50", "--role", "zookeeper").stdout
    assert "localhost: zookeeper 1: " in logs and "org.apache.zookeeper" in logs

    stopped = local.fab("stop-all")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    out = stopped.stdout
    assert out.index("master 1: ") < out.index("zookeeper 1: ")
    assert not Path(f"/proc/{zookeeper_pid}").exists()
    assert not list((local.home / "run").glob("*.pid"))
