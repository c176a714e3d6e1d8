"""`ember daemon` with real processes under both backends, including a real supervisord."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import free_port, get_json, wait_for

BACKENDS = ["plain", "supervisor"]


@dataclass
class Daemons:
    """Runs `ember daemon ...` with one EMBER_HOME; cleans up whatever it started."""

    home: Path
    env: dict[str, str]

    def environ(self, env: dict[str, str] | None = None,
                unset: tuple[str, ...] = ()) -> dict[str, str]:
        full = {**os.environ, **self.env, **(env or {})}
        return {k: v for k, v in full.items() if k not in unset}

    def run(self, *args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (),
            cwd: Path | None = None, timeout: float = 60,
            stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "toolkit", "daemon", *args],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=self.environ(env, unset), check=False, input=stdin)

    def pid_file(self, role: str, instance: int = 1) -> Path:
        return self.home / "run" / f"ember-test-{role}-{instance}.pid"

    def pid(self, role: str, instance: int = 1) -> int:
        return int(self.pid_file(role, instance).read_text())

    def log(self, role: str, instance: int = 1, n: int = 0) -> Path:
        name = f"ember-test-{role}-{instance}-{socket.gethostname()}.out"
        return self.home / "logs" / (name if n == 0 else f"{name}.{n}")

    @property
    def master_url(self) -> str:
        return f"ember://127.0.0.1:{self.env['EMBER_MASTER_PORT']}"

    def master_json(self) -> dict:  # type: ignore[type-arg]
        return get_json(f"http://127.0.0.1:{self.env['EMBER_MASTER_WEBUI_PORT']}/json")

    def cleanup(self) -> None:
        self.run("supervisor-shutdown", timeout=30)
        for pid_file in (self.home / "run").glob("*.pid"):
            try:
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if str(pid_file).encode() in cmdline or b"supervisord" in cmdline:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def daemons(tmp_path: Path, backend: str) -> Iterator[Daemons]:
    short = tempfile.mkdtemp(prefix="es-", dir="/tmp")  # AF_UNIX paths are short
    env = {
        "EMBER_HOME": str(tmp_path / "home"),
        "EMBER_CONF_DIR": str(tmp_path / "conf"),
        "EMBER_SUPERVISOR_DIR": short,
        "EMBER_IDENT_STRING": "test",
        "EMBER_DAEMON_BACKEND": backend,
        "EMBER_MASTER_HOST": "127.0.0.1",
        "EMBER_WORKER_HOST": "127.0.0.1",
        "EMBER_MASTER_PORT": str(free_port()),
        "EMBER_MASTER_WEBUI_PORT": str(free_port()),
        "EMBER_WORKER_WEBUI_PORT": str(free_port()),
        "EMBER_WORKER_CORES": "1",
        "EMBER_WORKER_MEMORY": "512m",
        "EMBER_START_TIMEOUT": "20",
    }
    d = Daemons(tmp_path / "home", env)
    try:
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(short, ignore_errors=True)


def nice_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_master_start_status_stop(daemons: Daemons) -> None:
    started = daemons.run("start", "master")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"starting master 1, logging to {daemons.log('master')}" in started.stdout
    with socket.create_connection(("127.0.0.1", int(daemons.env["EMBER_MASTER_PORT"])), 1):
        pass  # ready means the RPC port accepts
    wait_for(lambda: daemons.master_json()["status"] == "ALIVE", 5, "the web UI")
    pid = daemons.pid("master")

    status = daemons.run("status", "master")
    assert status.returncode == 0
    assert f"master 1 is running as process {pid}, up 0:00:0" in status.stdout

    lines = daemons.log("master").read_text().splitlines()
    assert lines[0].startswith("Ember command: ") and lines[0].endswith(
        f"toolkit master --pid-file {daemons.pid_file('master')}")
    assert lines[1] == "=" * 40

    stopped = daemons.run("stop", "master")
    assert stopped.returncode == 0 and "stopping master 1" in stopped.stdout
    assert not alive(pid)
    assert not daemons.pid_file("master").exists()
    assert daemons.run("status", "master").returncode == 3
    again = daemons.run("stop", "master")
    assert (again.returncode, again.stdout.strip().splitlines()[-1]) == (0, "no master 1 to stop")


def test_worker_start_waits_for_registration_and_steps_ports(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    started = daemons.run("start", "worker", "2", "--", daemons.master_url)
    assert started.returncode == 0, started.stdout + started.stderr
    workers = daemons.master_json()["workers"]
    assert [w["state"] for w in workers] == ["ALIVE"]
    ui = int(daemons.env["EMBER_WORKER_WEBUI_PORT"]) + 1  # instance 2 -> base port + 1
    assert workers[0]["webuiaddress"] == f"http://127.0.0.1:{ui}"
    assert daemons.run("status", "worker", "2").returncode == 0
    assert daemons.run("stop", "worker", "2").returncode == 0
    wait_for(lambda: daemons.master_json()["aliveworkers"] == 0, 10, "worker gone")


def test_several_instances_start_and_stop_together_reporting_each(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    started = daemons.run("start", "worker", "1,2", "--json", "--", daemons.master_url)
    assert started.returncode == 0, started.stdout + started.stderr
    reports = sorted((json.loads(line) for line in started.stdout.splitlines()),
                     key=lambda r: r["instance"])
    assert [(r["role"], r["instance"], r["code"]) for r in reports] == [
        ("worker", 1, 0), ("worker", 2, 0)]
    assert reports[1]["lines"][-1] == f"worker 2 ready as process {daemons.pid('worker', 2)}"
    assert daemons.master_json()["aliveworkers"] == 2
    pids = [daemons.pid("worker", i) for i in (1, 2)]
    stopped = daemons.run("stop", "worker", "1,2", "--json")
    assert stopped.returncode == 0
    assert sorted(json.loads(line)["code"] for line in stopped.stdout.splitlines()) == [0, 0]
    assert not any(alive(pid) for pid in pids)


def test_files_from_stdin_are_installed_before_settings_are_read(daemons: Daemons) -> None:
    from toolkit.base.files import bundle

    conf = Path(daemons.env["EMBER_CONF_DIR"])
    webui = free_port()
    files = bundle([(str(conf / "ember-env.sh"), f"EMBER_MASTER_WEBUI_PORT={webui}\n"
                     f"EMBER_SECRET_FILE={conf}/secret\n".encode(), 0o644),
                    (str(conf / "secret"), b"s" * 32, 0o600)])
    started = daemons.run("start", "master", "--files-from-stdin", stdin=files.decode(),
                          unset=("EMBER_MASTER_WEBUI_PORT",))
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: get_json(f"http://127.0.0.1:{webui}/json")["status"] == "ALIVE", 5,
             "the web UI on the port ember-env.sh names")
    assert (conf / "secret").stat().st_mode & 0o777 == 0o600
    assert conf.stat().st_mode & 0o066 == 0  # others may not list or change it
    bad = daemons.run("status", "master", "--files-from-stdin", stdin='[{"path": "x"}]\n')
    assert bad.returncode == 2 and "not a valid bundle" in bad.stderr


def test_when_told_gets_ready_then_waits_for_go(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    args = ("start", "worker", "1", "--when-told", "--", daemons.master_url)
    skipped = daemons.run(*args, stdin="skip no master is up\n")
    assert skipped.returncode == 1
    assert skipped.stdout.strip() == "worker 1 not started: no master is up"
    status = daemons.run("status", "worker")
    assert status.returncode == 3
    if daemons.env["EMBER_DAEMON_BACKEND"] == "supervisor":  # got ready: supervisord is up
        assert "[supervisor: not configured]" in status.stdout
    gone = daemons.run(*args)  # end of input: the caller went away
    assert gone.returncode == 1 and "not started: nobody said to go ahead" in gone.stdout
    assert daemons.run(*args, stdin="go\n").returncode == 0
    assert daemons.master_json()["aliveworkers"] == 1
    stopped = daemons.run("stop", "worker", "--when-told", stdin="go\n")
    assert stopped.returncode == 0 and "stopping worker 1" in stopped.stdout


def test_go_with_seconds_bounds_the_start_and_what_is_not_ready_is_stopped(
        daemons: Daemons) -> None:
    args = ("start", "worker", "1", "--when-told", "--", daemons.master_url)  # no master
    late = daemons.run(*args, stdin="go 2\n")
    assert late.returncode == 1
    # gave up after the 2 s it was given, not its own EMBER_START_TIMEOUT (20 s here)
    assert "failed to launch worker 1: not ready after 2 s" in late.stdout, late.stdout
    assert "worker 1 was stopped" in late.stdout
    assert daemons.run("status", "worker").returncode == 3  # nothing left retrying
    bad = daemons.run(*args, stdin="go soon\n")
    assert bad.returncode == 2 and "'go' takes seconds, not 'soon'" in bad.stderr


def test_double_start_is_refused(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    pid = daemons.pid("master")
    again = daemons.run("start", "master")
    assert again.returncode == 1
    assert f"master 1 running as process {pid}. Stop it first." in again.stdout
    assert daemons.pid("master") == pid


def test_niceness_is_applied(daemons: Daemons) -> None:
    assert daemons.run("start", "master", env={"EMBER_NICENESS": "7"}).returncode == 0
    assert nice_of(daemons.pid("master")) == 7


def test_settings_come_from_ember_env_sh(daemons: Daemons) -> None:
    conf = Path(daemons.env["EMBER_CONF_DIR"])
    conf.mkdir(parents=True)
    (conf / "ember-env.sh").write_text("# rendered\nexport EMBER_NICENESS=3\n"
                                       "EMBER_LOG_DIR=\"$EMBER_HOME/other-logs\"\n")
    assert daemons.run("start", "master").returncode == 0
    assert nice_of(daemons.pid("master")) == 3
    assert list((daemons.home / "other-logs").glob("ember-test-master-1-*.out"))


def test_unparseable_env_file_names_file_and_line(daemons: Daemons) -> None:
    conf = Path(daemons.env["EMBER_CONF_DIR"])
    conf.mkdir(parents=True)
    (conf / "ember-env.sh").write_text("EMBER_NICENESS=1\nEMBER_LOG_DIR=$(rm -rf /)\n")
    result = daemons.run("start", "master")
    assert result.returncode == 2
    assert f"{conf / 'ember-env.sh'} line 2: command substitution is not supported" in (
        result.stderr)
    assert not daemons.pid_file("master").exists()


def test_log_rotation_keeps_n_files_and_every_line(daemons: Daemons) -> None:
    env = {"EMBER_LOG_MAX_FILES": "3"}
    for run in range(1, 6):
        result = daemons.run("start", "master", "--", "--worker-timeout", str(run), env=env)
        assert result.returncode == 0, result.stdout
        assert daemons.run("stop", "master", env=env).returncode == 0
    logs = sorted(p.name for p in daemons.log("master").parent.glob("ember-test-master-1-*"))
    base = daemons.log("master").name
    assert logs == [base, f"{base}.1", f"{base}.2", f"{base}.3"]
    for n, run in [(0, 5), (1, 4), (2, 3), (3, 2)]:
        text = daemons.log("master", n=n).read_text()
        assert text.count("Ember command: ") == 1, text
        assert text.startswith("Ember command: ")
        assert f"(worker timeout {run} s)" in text
        assert "Master exited with code 0" in text  # the run's last line made it too


def test_log_max_files_0_appends_without_rotating(daemons: Daemons) -> None:
    env = {"EMBER_LOG_MAX_FILES": "0"}
    for _ in range(2):
        assert daemons.run("start", "master", env=env).returncode == 0
        assert daemons.run("stop", "master", env=env).returncode == 0
    assert daemons.log("master").read_text().count("Ember command: ") == 2
    assert not daemons.log("master", n=1).exists()


@pytest.mark.parametrize("value", ["abc", "-1", "2.5"])
def test_bad_log_max_files_is_an_error(daemons: Daemons, value: str) -> None:
    result = daemons.run("start", "master", env={"EMBER_LOG_MAX_FILES": value})
    assert result.returncode == 2
    assert f"EMBER_LOG_MAX_FILES: {value!r} is not a whole number from 0 to 1000" in (
        result.stderr)


def test_stale_pid_file_of_another_program_is_never_signalled(daemons: Daemons) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        pid_file = daemons.pid_file("master")
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(f"{sleeper.pid}\n")

        status = daemons.run("status", "master")
        assert status.returncode == 1 and "is stale" in status.stdout and "sleep" in status.stdout

        stopped = daemons.run("stop", "master")
        assert stopped.returncode == 0
        assert f"removing stale pid file {pid_file}: pid {sleeper.pid} is now 'sleep 300'" in (
            stopped.stdout)
        assert "no master 1 to stop" in stopped.stdout
        assert not pid_file.exists()

        pid_file.write_text(f"{sleeper.pid}\n")
        assert daemons.run("start", "master").returncode == 0
        assert daemons.pid("master") != sleeper.pid
        assert sleeper.poll() is None, "the unrelated process must never be signalled"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("backend", ["plain"])  # supervisor restarts it: see below
def test_dead_process_with_pid_file_is_lsb_1(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    pid = daemons.pid("master")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 5, "process gone")
    status = daemons.run("status", "master")
    assert status.returncode == 1
    assert "is not running, but pid file" in status.stdout


def test_role_that_ignores_sigterm_is_killed_after_the_timeout(daemons: Daemons) -> None:
    env = {"EMBER_STOP_TIMEOUT": "1"}
    assert daemons.run("start", "master", env=env).returncode == 0
    pid = daemons.pid("master")
    os.kill(pid, signal.SIGSTOP)  # a hung process: SIGTERM stays pending
    started = time.monotonic()
    result = daemons.run("stop", "master", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started >= 1.0
    assert "master 1 did not stop within 1 s of SIGTERM: killed with SIGKILL" in result.stdout
    assert not alive(pid)
    assert not daemons.pid_file("master").exists()


def test_a_role_that_stops_on_sigterm_is_not_said_to_be_killed(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    result = daemons.run("stop", "master")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIGKILL" not in result.stdout


def test_start_failure_exits_non_zero_with_the_log_tail(daemons: Daemons) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(daemons.env["EMBER_MASTER_PORT"])))
        taken.listen()
        result = daemons.run("start", "master")
    assert result.returncode == 1
    out = result.stdout
    assert "failed to launch master 1" in out
    assert f"master cannot listen on 127.0.0.1:{daemons.env['EMBER_MASTER_PORT']}" in out
    assert f"full log in {daemons.log('master')}" in out
    assert daemons.run("status", "master").returncode == 3


@pytest.mark.parametrize("backend", ["supervisor"])
def test_a_role_that_outlived_a_killed_supervisord_is_not_started_twice(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    master = daemons.pid("master")
    supervisord = int((Path(daemons.env["EMBER_SUPERVISOR_DIR"]) / "supervisord.pid")
                      .read_text())
    os.kill(supervisord, signal.SIGKILL)  # its children keep running
    try:
        # The next start brings up a new supervisord, which autostarts the programs it knows
        assert daemons.run("start", "worker", "--", daemons.master_url).returncode == 0
        assert daemons.master_json()["aliveworkers"] == 1
        status = daemons.run("status", "master")
        assert status.returncode == 0 and f"running as process {master}," in status.stdout
        masters = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                   and alive(int(p.name))
                   and str(daemons.pid_file("master")).encode() in _cmdline(p)]
        assert [int(p.name) for p in masters] == [master]
        assert daemons.run("stop", "master").returncode == 0  # found by its pid
        assert not alive(master)
    finally:  # a second master would have taken over the pid file, hiding this one
        if alive(master):
            os.kill(master, signal.SIGKILL)


@pytest.mark.parametrize("backend", ["supervisor"])
def test_stopping_after_a_killed_supervisord_leaves_no_pid_file_or_socket(
        daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    folder = Path(daemons.env["EMBER_SUPERVISOR_DIR"])
    os.kill(int((folder / "supervisord.pid").read_text()), signal.SIGKILL)
    time.sleep(0.2)
    result = daemons.run("stop", "master", "--shutdown-supervisor")  # as stop-all does
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (folder / "supervisord.pid").exists()
    assert not (folder / "supervisor.sock").exists()


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("backend", ["supervisor"])
def test_stopped_programs_do_not_come_back_with_supervisord(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    assert daemons.run("start", "worker", "--", daemons.master_url).returncode == 0
    assert daemons.run("stop", "worker").returncode == 0
    programs = Path(daemons.env["EMBER_SUPERVISOR_DIR"]) / "programs"
    assert [p.name for p in programs.iterdir()] == ["ember-test-master-1.conf"]


@pytest.mark.parametrize("backend", ["supervisor"])
def test_supervisor_restarts_a_killed_worker_and_the_pid_file_follows(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    assert daemons.run("start", "worker", "--", daemons.master_url).returncode == 0
    old = daemons.pid("worker")
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: daemons.pid("worker") if daemons.pid("worker") != old else None, 15,
                   "a new worker pid in the pid file")
    assert alive(new) and not alive(old)
    status = daemons.run("status", "worker")
    assert status.returncode == 0 and f"process {new}" in status.stdout
    wait_for(lambda: daemons.master_json()["aliveworkers"] == 1, 15, "worker ALIVE again")
    assert daemons.run("stop", "worker").returncode == 0
    assert not alive(new)


@pytest.mark.parametrize("backend", ["supervisor"])
def test_supervisor_shutdown_stops_everything(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    pid = daemons.pid("master")
    result = daemons.run("supervisor-shutdown")
    assert result.returncode == 0 and "supervisord stopped" in result.stdout
    wait_for(lambda: not alive(pid), 10, "master gone with supervisord")
    assert daemons.run("supervisor-shutdown").stdout.strip() == "no supervisord running"


@pytest.mark.parametrize("backend", ["supervisor"])
def test_too_long_supervisor_socket_path_is_refused(daemons: Daemons) -> None:
    long_dir = "/tmp/" + "d" * 110
    result = daemons.run("start", "master", env={"EMBER_SUPERVISOR_DIR": long_dir})
    assert result.returncode == 2
    sock = f"{long_dir}/supervisor.sock"
    assert f"supervisor socket path {sock} is {len(sock)} bytes long" in result.stderr
    assert "EMBER_SUPERVISOR_DIR" in result.stderr
    assert not Path(long_dir).exists()


def test_no_daemonize_runs_in_the_foreground(daemons: Daemons) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "daemon", "start", "master"],
                            env={**os.environ, **daemons.env, "EMBER_NO_DAEMONIZE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: daemons.master_json()["status"] == "ALIVE", 15, "master up")
        assert daemons.pid("master") == proc.pid  # exec'd: no wrapper process in between
        assert not daemons.log("master").exists()  # output stays on the terminal
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert b"Ember command: " in proc.stdout.read()  # type: ignore[union-attr]
        assert not daemons.pid_file("master").exists()
    finally:
        proc.kill()
        proc.wait()


def test_restart_replaces_the_process_and_starts_when_stopped(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0
    old = daemons.pid("master")
    result = daemons.run("restart", "master")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stopping master 1" in result.stdout and "starting master 1" in result.stdout
    new = daemons.pid("master")
    assert new != old and alive(new) and not alive(old)
    assert daemons.run("stop", "master").returncode == 0
    result = daemons.run("restart", "master")
    assert result.returncode == 0 and "no master 1 to stop" in result.stdout
    wait_for(lambda: daemons.master_json()["status"] == "ALIVE", 5, "the restarted master")


def test_relative_home_still_finds_its_files(daemons: Daemons, tmp_path: Path) -> None:
    relative = {"EMBER_HOME": "rel-home"}
    started = daemons.run("start", "master", env=relative, unset=("EMBER_CONF_DIR",),
                          cwd=tmp_path)
    assert started.returncode == 0, started.stdout + started.stderr
    assert (tmp_path / "rel-home" / "run" / "ember-test-master-1.pid").exists()
    status = daemons.run("status", "master", env=relative, unset=("EMBER_CONF_DIR",),
                         cwd=tmp_path)
    assert status.returncode == 0, status.stdout
    stopped = daemons.run("stop", "master", env=relative, unset=("EMBER_CONF_DIR",),
                          cwd=tmp_path)
    assert stopped.returncode == 0 and "stopping master 1" in stopped.stdout


def test_one_start_does_not_leak_its_settings_into_the_next(daemons: Daemons) -> None:
    """supervisord is started by the first caller; its EMBER_* must not reach later programs."""
    assert daemons.run("start", "master", env={"EMBER_WORKER_CORES": "3"}).returncode == 0
    result = daemons.run("start", "worker", "--", daemons.master_url,
                         unset=("EMBER_WORKER_CORES",))
    assert result.returncode == 0, result.stdout + result.stderr
    (worker,) = daemons.master_json()["workers"]
    assert worker["cores"] == len(os.sched_getaffinity(0))


def test_concurrent_starts_launch_one_process(daemons: Daemons) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "toolkit", "daemon", "start", "master"],
                              env=daemons.environ(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [(p.wait(60), p.stdout.read()) for p in procs]  # type: ignore[union-attr]
    assert sorted(code for code, _ in outputs).count(0) == 1, outputs
    for code, out in outputs:
        if code:
            assert "under way" in out or "Stop it first" in out, out
    masters = [p for p in Path("/proc").iterdir() if p.name.isdigit()
               and str(daemons.pid_file("master")).encode() in _cmdline(p)]
    assert len(masters) == 1


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("backend", ["supervisor"])
def test_supervisor_stop_also_stops_a_plain_started_instance(daemons: Daemons) -> None:
    assert daemons.run("start", "master").returncode == 0  # supervisord is up
    other = ["--", "--port", str(free_port()), "--webui-port", str(free_port())]
    assert daemons.run("start", "master", "2", "--backend", "plain", *other).returncode == 0
    pid = daemons.pid("master", 2)
    stopped = daemons.run("stop", "master", "2")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not alive(pid) and not daemons.pid_file("master", 2).exists()


def test_an_argument_with_comment_marks_keeps_the_rest_of_the_command(daemons: Daemons) -> None:
    """supervisor's INI parser cuts a value at whitespace then ; or #: an argument holding
    those must not cut off the pid file (stop and status would lose the daemon)."""
    odd = daemons.home / "rec ;x #y"
    started = daemons.run("start", "master", "--", "--recovery-mode", "filesystem",
                          "--recovery-dir", str(odd))
    assert started.returncode == 0, started.stdout + started.stderr
    pid = daemons.pid("master")
    assert (odd / "leader.lock").exists()  # the whole argument reached the master
    status = daemons.run("status", "master")
    assert status.returncode == 0 and f"running as process {pid}" in status.stdout
    assert daemons.run("stop", "master").returncode == 0
    assert not alive(pid)
