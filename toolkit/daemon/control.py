"""`ember daemon start|stop|status|restart`: spark-daemon.sh's behaviour with its flaws fixed.

Exit codes: start/stop/restart 0 on success, 1 on failure; status follows LSB (0 running,
1 dead but pid file exists, 3 not running).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from toolkit.base.pidfile import read_pid_file
from toolkit.base.procs import Found, PidState, Stopped, check, format_uptime
from toolkit.daemon.logs import rotate, tail
from toolkit.daemon.protocol import Report
from toolkit.daemon.settings import DaemonSettings
from toolkit.settings import of_role, resolve

LSB_RUNNING, LSB_DEAD, LSB_NOT_RUNNING = 0, 1, 3

Say = Callable[[str], None]


class Backend(Protocol):
    name: str
    confirms_ready: bool
    """True when launch itself returns only once the role is ready (systemctl start)."""

    def prepare(self) -> None: ...
    def launch(self, role: str, instance: int, command: list[str], env: dict[str, str],
               log: Path) -> Callable[[], str | None]: ...
    def stop(self, role: str, instance: int, pid: int | None) -> Stopped: ...
    def program(self, role: str, instance: int) -> tuple[str | None, bool]: ...


def backend_for(settings: DaemonSettings) -> Backend:
    if settings.backend == "plain":
        from toolkit.daemon.plain import PlainBackend

        return PlainBackend(settings)
    if settings.backend == "systemd":
        from toolkit.daemon.systemd import SystemdBackend

        return SystemdBackend(settings)
    from toolkit.daemon.supervisor import SupervisorBackend

    return SupervisorBackend(settings)


def runtime_command(settings: DaemonSettings, role: str, instance: int,
                    role_args: list[str], niced: bool = True,
                    python: str = sys.executable) -> list[str]:
    """``nice -n N <python> -m toolkit ROLE ARGS --pid-file FILE``; nice execs, the pid stays.
    Without ``niced`` (under systemd, whose Nice= applies), no nice."""
    nice = [shutil.which("nice") or "/usr/bin/nice", "-n", str(settings.niceness)]
    return [*(nice if niced else []), python, "-m", "toolkit", role, *role_args,
            "--pid-file", str(settings.pid_file(role, instance))]


def instance_env(settings: DaemonSettings, role: str, instance: int) -> dict[str, str]:
    """EMBER_* values for one instance: worker ports step by instance, as in start-worker.sh."""
    env = dict(settings.env)
    env["EMBER_HOME"] = str(settings.home)
    for setting in of_role(role):
        base = resolve(setting, None, env) if setting.step else None
        if base:  # a port of 0 is any free one: it does not step
            env[setting.env] = str(base + instance - 1)
    env["NOTIFY_SOCKET"] = settings.notify_name(role, instance)
    return env


def prepare(settings: DaemonSettings) -> None:
    """Do ahead what a start would do first (start supervisord), so the start itself is quick."""
    if not settings.no_daemonize:
        backend_for(settings).prepare()


def each_instance(role: str, instances: list[int], action: Callable[[int, Say], int],
                  as_json: bool = False, say: Say = print) -> int:
    """Run ``action`` for every instance at once; the highest exit code.

    One instance in text mode prints as it goes. Otherwise each instance's lines are printed
    together when it is done, or as one JSON object per instance: role, instance, code, lines.
    """
    if len(instances) == 1 and not as_json:
        return action(instances[0], say)
    lock = threading.Lock()
    codes: dict[int, int] = {}

    def one(instance: int) -> None:
        lines: list[str] = []
        try:
            code = action(instance, lines.append)
        except Exception as exc:  # reported with the instance it belongs to
            lines.append(f"{role} {instance}: {exc}")
            code = 1
        with lock:
            codes[instance] = code
            if as_json:
                say(Report(role, instance, code, lines).line())
            else:
                for line in lines:
                    say(line)

    threads = [threading.Thread(target=one, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return max(codes.values())


def _clear_leftover(state: PidState, pid_file: Path, what: str, say: Say) -> None:
    if state.found == Found.STALE and state.info is not None:
        say(f"removing stale pid file {pid_file}: pid {state.pid} is now "
            f"'{state.info.program}', not {what}")
    elif state.found == Found.DEAD:
        say(f"removing pid file {pid_file} of {what}, which is no longer running")
    if state.found in (Found.STALE, Found.DEAD):
        pid_file.unlink(missing_ok=True)


def start(settings: DaemonSettings, role: str, instance: int, role_args: list[str],
          say: Say = print, if_stopped: bool = False, key_files: list[Path] | None = None
          ) -> int:
    """Start an instance. ``if_stopped``: one that runs is fine, and reloads its keys if any
    of ``key_files`` (its secret, its TLS files) changed since it started or last reloaded."""
    from toolkit.daemon.readiness import ReadinessListener

    what = f"{role} {instance}"
    pid_file = settings.pid_file(role, instance)
    command = runtime_command(settings, role, instance, role_args)
    env = instance_env(settings, role, instance)
    backend = None if settings.no_daemonize else backend_for(settings)
    # The listener is also the lock: a second start of this instance stops here.
    with ReadinessListener(env["NOTIFY_SOCKET"], what, settings.user) as listener:
        state = check(pid_file, role)
        if state.found == Found.RUNNING:
            if if_stopped:
                note = "" if backend is None else _unsupervised(
                    settings, *backend.program(role, instance))
                say(f"{what} already running as process {state.pid}{note}")
                if _newer(key_files or [], pid_file):
                    return reload(settings, role, instance, say)
                return 0
            say(f"{what} running as process {state.pid}. Stop it first.")
            return 1
        _clear_leftover(state, pid_file, what, say)
        if backend is None:
            listener.close()
            return _exec_foreground(settings, command, env)
        log = settings.log_file(role, instance)
        for folder in (settings.log_dir, settings.pid_dir, settings.home):
            folder.mkdir(parents=True, exist_ok=True)
        rotate(log, settings.log_max_files)
        journal = backend.name == "systemd" and settings.systemd_output == "journal"
        say(f"starting {what}, logging to " + (
            f"the journal (journalctl -u {settings.unit(role, instance)})" if journal else
            str(log)))
        failure = backend.launch(role, instance, command, env, log)
        problem = failure() if backend.confirms_ready else listener.wait(
            settings.start_timeout, failure)
    if problem is None:
        say(f"{what} ready as process {read_pid_file(pid_file)}")
        return 0
    say(f"failed to launch {what}: {problem}")
    for line in tail(log, 10):
        say(f"  {line}")
    say(f"full log in {log}")
    # nothing half-started is left behind, retrying on its own (a worker for its whole
    # registration timeout): what failed to start is stopped
    if check(pid_file, role).found == Found.RUNNING or (backend.program(role, instance)[1]):
        if stop(settings, role, instance, lambda _line: None) == 0:
            say(f"  {what} was stopped")
        else:
            say(f"  {what} could not be stopped: `ember daemon stop {role} {instance}`")
    return 1


def run_foreground(settings: DaemonSettings, role: str, instance: int,
                   role_args: list[str]) -> int:
    """`ember daemon run`: become the role in the foreground with this instance's settings,
    without nice: what a service manager's unit runs (its Nice= applies)."""
    command = runtime_command(settings, role, instance, role_args, niced=False)
    return _exec_foreground(settings, command, instance_env(settings, role, instance))


def _exec_foreground(settings: DaemonSettings, command: list[str], env: dict[str, str]) -> int:
    """EMBER_NO_DAEMONIZE: become the role, in the foreground, output to this terminal."""
    env = {**os.environ, **env}
    if "NOTIFY_SOCKET" in os.environ:  # systemd's, not ours
        env["NOTIFY_SOCKET"] = os.environ["NOTIFY_SOCKET"]
    else:
        env.pop("NOTIFY_SOCKET")
    settings.pid_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    user = settings.user  # as root: the run user, as every backend runs the role
    if user is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        group = grp.getgrnam(settings.group).gr_gid if settings.group else entry.pw_gid
        env.update(HOME=str(settings.home), USER=user, LOGNAME=user)
        os.setgroups([])
        os.setgid(group)
        os.setuid(entry.pw_uid)
    os.execve(command[0], command, env)


def _newer(files: list[Path], than: Path) -> bool:
    try:
        since = than.stat().st_mtime_ns
    except OSError:
        return False
    return any(f.exists() and f.stat().st_mtime_ns > since for f in files)


RELOADS = ("master", "worker")
"""The roles that reload their keys on SIGHUP (a ZooKeeper server would end)."""
RELOAD_TIMEOUT = 10.0


def reload(settings: DaemonSettings, role: str, instance: int, say: Say = print) -> int:
    """SIGHUP: the instance reads its secret and TLS files again. Done when it has written
    its pid file again (service.reload)."""
    what = f"{role} {instance}"
    if role not in RELOADS:
        say(f"{what} has no keys to reload")
        return 0
    pid_file = settings.pid_file(role, instance)
    state = check(pid_file, role)
    if state.found != Found.RUNNING or state.pid is None:
        say(f"{what} is not running: nothing to reload")
        return 0

    def stamp() -> tuple[int, int] | None:
        try:
            info = pid_file.stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns
    before = stamp()
    try:
        os.kill(state.pid, signal.SIGHUP)
    except OSError as exc:  # it ended meanwhile, or it is another user's
        say(f"{what} (process {state.pid}) could not be told to reload: {exc.strerror}")
        return 0 if isinstance(exc, ProcessLookupError) else 1
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        if stamp() != before:
            say(f"{what} (process {state.pid}) reloaded its keys")
            return 0
        time.sleep(0.05)
    say(f"{what} (process {state.pid}) did not confirm a reload within {RELOAD_TIMEOUT:g} s; "
        f"see its log")
    return 1


def stop(settings: DaemonSettings, role: str, instance: int, say: Say = print) -> int:
    what = f"{role} {instance}"
    pid_file = settings.pid_file(role, instance)
    state = check(pid_file, role)
    backend = backend_for(settings)
    if state.found != Found.RUNNING and not backend.program(role, instance)[1]:
        _clear_leftover(state, pid_file, what, say)
        say(f"no {what} to stop")
        return 0
    say(f"stopping {what}")
    pid = state.pid if state.found == Found.RUNNING else None
    ended = backend.stop(role, instance, pid)
    if ended == Stopped.ALIVE:
        say(f"{what} (process {pid}) is still running after SIGKILL")
        return 1
    if ended == Stopped.KILLED:
        say(f"{what} did not stop within {settings.stop_timeout:g} s of SIGTERM: "
            f"killed with SIGKILL")
    if check(pid_file, role).found == Found.DEAD:
        pid_file.unlink(missing_ok=True)
    return 0


def status_info(settings: DaemonSettings, role: str, instance: int) -> dict[str, Any]:
    """What status reports, as data: code (LSB), state, pid, uptime, message."""
    what = f"{role} {instance}"
    pid_file = settings.pid_file(role, instance)
    state = check(pid_file, role)
    detail, supervised = backend_for(settings).program(role, instance)
    suffix = f" [{detail}]" if detail else ""
    info: dict[str, Any] = {"role": role, "instance": instance, "pid": state.pid,
                            "uptime": None, "detail": detail}
    if state.found == Found.RUNNING and state.info is not None:
        uptime = state.info.uptime()
        info.update(code=LSB_RUNNING, state="running", uptime=round(uptime, 1),
                    message=f"{what} is running as process {state.pid}, up "
                            f"{format_uptime(uptime)}{suffix}")
        if note := _unsupervised(settings, detail, supervised):
            info.update(state="unsupervised", message=f"{info['message']}{note}")
    elif state.found == Found.STALE and state.info is not None:
        info.update(code=LSB_DEAD, state="stale",
                    message=f"{what} is not running; pid file {pid_file} is stale (pid "
                            f"{state.pid} is '{state.info.program}'){suffix}")
    elif state.found == Found.DEAD:
        info.update(code=LSB_DEAD, state="dead",
                    message=f"{what} is not running, but pid file {pid_file} exists{suffix}")
    elif supervised:  # supervisor is (re)starting it
        info.update(code=LSB_DEAD, state="starting",
                    message=f"{what} is not running yet{suffix}")
    else:
        info.update(code=LSB_NOT_RUNNING, state="stopped", message=f"{what} is not running{suffix}")
    return info


RESUPERVISE = "`ember daemon restart` or `fab restart-all` puts it back under supervision"


def _unsupervised(settings: DaemonSettings, detail: str | None, supervised: bool) -> str:
    """The note for a running role that its backend does not supervise (its supervisord was
    killed or hangs, or the plain backend started it); empty when it is supervised."""
    if settings.backend == "plain" or supervised:
        return ""
    return (f", but {settings.backend} does not supervise it ({detail}), so a crash would not "
            f"be restarted; {RESUPERVISE}")


def status(settings: DaemonSettings, role: str, instance: int, say: Say = print,
           as_json: bool = False) -> int:
    info = status_info(settings, role, instance)
    say(json.dumps(info) if as_json else info["message"])
    return int(info["code"])


def restart(settings: DaemonSettings, role: str, instance: int, role_args: list[str],
            say: Say = print) -> int:
    code = stop(settings, role, instance, say)
    return code or start(settings, role, instance, role_args, say)


def supervisor_shutdown(settings: DaemonSettings, say: Say = print,
                        only_if_idle: bool = False) -> int:
    from toolkit.daemon.supervisor import SupervisorBackend

    if settings.backend != "supervisor":
        return 0
    backend = SupervisorBackend(settings)
    if only_if_idle and not backend.idle():
        say("supervisord still runs other programs; left running")
    elif only_if_idle and backend.under_systemd():
        say("supervisord is run by systemd (ember-supervisord.service); left running")
    elif backend.shutdown():
        say("supervisord stopped, with every program it ran")
    else:
        say("no supervisord running")
    return 0
