"""The supervisor backend: one supervisord per host and user, controlled over XML-RPC."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import http.client
import math
import os
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from toolkit.base.files import names_in, open_dir, open_private, remove, write_atomic
from toolkit.base.pidfile import read_pid_file
from toolkit.base.procs import Stopped, wait_gone
from toolkit.daemon.logs import tail
from toolkit.daemon.settings import ROLES, DaemonSettings, check_socket_path
from toolkit.errors import EmberError

RUNNING_STATES = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")
FAILED_STATES = ("BACKOFF", "FATAL", "EXITED", "STOPPED", "UNKNOWN")
BAD_NAME, NOT_RUNNING, ALREADY_STARTED = 10, 70, 60
QUERY_TIMEOUT = 5.0  # a question to supervisord (state, process info) that does not wait


class SupervisorError(EmberError, RuntimeError):
    """supervisord could not be started or refused a request."""


class SupervisorBackend:
    name = "supervisor"
    confirms_ready = False

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        check_socket_path(settings.supervisor_socket)

    # supervisord itself ------------------------------------------------------------------

    def _proxy(self, timeout: float | None = None) -> Any:
        """XML-RPC over supervisord's socket. Every call is bounded: by ``timeout``, else by
        the stop timeout plus a margin (stopProcess waits that long). A frozen supervisord
        accepts the connection and never answers."""
        from supervisor.xmlrpc import SupervisorTransport

        path = str(self.settings.supervisor_socket)
        bound = timeout if timeout is not None else self.settings.stop_timeout + 15
        transport = SupervisorTransport(None, None, f"unix://{path}")
        transport._get_connection = lambda: _UnixConnection(path, bound)
        return xmlrpc.client.ServerProxy("http://localhost", transport=transport)

    def running(self) -> bool:
        try:
            self._proxy(QUERY_TIMEOUT).supervisor.getState()
        except (OSError, xmlrpc.client.Error):
            return False
        return True

    def idle(self) -> bool:
        """True when supervisord runs no program (or is not running)."""
        if not self.running():
            return True
        infos = self._proxy(QUERY_TIMEOUT).supervisor.getAllProcessInfo()
        return not any(info["statename"] in RUNNING_STATES for info in infos)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Its directory is the run user's: the lock file is opened without following a link
        and never truncated (a link to /etc/shadow would have emptied it)."""
        fd = open_private(self.settings.supervisor_dir / "supervisor.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _log_file(self) -> Path:
        s = self.settings
        return s.log_dir / f"supervisord-{s.ident}-{s.hostname}.log"

    def config_text(self, user: str | None) -> str:
        """supervisord.conf; ``user`` is who it drops to when started as root."""
        s = self.settings
        from toolkit.render import render

        return render("supervisor/supervisord.conf.j2", socket=s.supervisor_socket,
                      log_file=self._log_file(), pid_file=s.supervisor_pid_file,
                      log_dir=s.log_dir, home=s.home, ident=s.ident,
                      programs_dir=s.supervisor_programs, user=user)

    def write_config(self) -> Path:
        """supervisord.conf for this host and user (also what ember-supervisord.service runs)."""
        s = self.settings
        for folder in (s.supervisor_dir, s.supervisor_programs, s.log_dir, s.home):
            os.close(open_dir(folder))
        # As root with a run user, supervisord is started as that user (ensure_running): a
        # supervisord started as root reads its includes, the run user's files, before it
        # drops to user=, and an included [supervisord] user=root would keep it root.
        user = "root" if os.geteuid() == 0 and s.user is None else None
        write_atomic(s.supervisor_conf, self.config_text(user).encode())
        return s.supervisor_conf

    def program_text(self, role: str, instance: int, command: list[str],
                     env: Mapping[str, str], log: Path) -> str:
        s = self.settings
        from toolkit.render import render

        return render("supervisor/program.conf.j2", name=s.name(role, instance), role=role,
                      instance=instance, command=command, home=s.home,
                      stop_timeout=math.ceil(s.stop_timeout), log_file=log,
                      log_max_files=s.log_max_files, log_max_bytes=s.log_max_bytes,
                      env=dict(env))

    def ensure_running(self) -> None:
        """Start supervisord unless it already answers on its socket."""
        if self.running():
            return
        self._forget_orphans()
        conf = self.write_config()
        # Programs inherit supervisord's environment: keep this caller's EMBER_* out of it, so
        # each program gets exactly the settings its own `ember daemon start` gave it.
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith("EMBER_") and k != "NOTIFY_SOCKET"}
        user = self.settings.user if os.geteuid() == 0 else None
        if user is not None:  # root's own variables are not the run user's
            clean = {**{k: v for k, v in clean.items() if not k.startswith(("SUDO_", "SSH_"))},
                     "HOME": str(self.settings.home), "USER": user, "LOGNAME": user}
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c",
                                 str(conf)], capture_output=True, text=True,
                                check=False, stdin=subprocess.DEVNULL, env=clean, cwd="/",
                                user=user, group=self.settings.group if user else None,
                                extra_groups=[] if user else None)
        deadline = time.monotonic() + 10
        while not self.running():
            if time.monotonic() > deadline or result.returncode != 0:
                lines = (result.stdout + result.stderr).strip().splitlines()
                lines += tail(self._log_file(), 10)
                raise SupervisorError("supervisord did not start:\n  " + "\n  ".join(lines))
            time.sleep(0.02)

    def _forget_orphans(self) -> None:
        """Programs autostart with supervisord (so they come back after a reboot). One whose
        process still runs from a supervisord that was killed must not start twice: its
        program file goes, and the process is left to run (stop still finds it by pid)."""
        from toolkit.base.procs import Found, check

        s = self.settings
        names = names_in(s.supervisor_programs)
        for role in ROLES:
            for name in fnmatch.filter(names, f"{s.name(role, '*')}.conf"):
                instance = name[:-len(".conf")].rpartition("-")[2]
                if instance.isdigit() and check(s.pid_file(role, int(instance)),
                                                role).found == Found.RUNNING:
                    remove(s.supervisor_programs / name)

    def prepare(self) -> None:
        """Have supervisord running ahead of a launch (the slow part of a first start)."""
        with self.locked():
            self.ensure_running()

    def under_systemd(self) -> bool:
        """True when the running supervisord is ember-supervisord.service's."""
        pid = read_pid_file(self.settings.supervisor_pid_file)
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text() if pid else ""
        except OSError:
            return False
        return "/ember-supervisord.service" in cgroup

    def shutdown(self) -> bool:
        """Stop supervisord and everything under it, forgetting its programs; False when none
        was running."""
        programs = self.settings.supervisor_programs
        for name in fnmatch.filter(names_in(programs), f"{self.settings.name('*', '*')}.conf"):
            remove(programs / name)
        if not self.running():
            self._clear_leftovers()
            return False
        pid = read_pid_file(self.settings.supervisor_pid_file)
        self._proxy().supervisor.shutdown()
        if pid is not None:
            wait_gone(pid, self.settings.stop_timeout + 10)
        return True

    def _clear_leftovers(self) -> None:
        """A killed supervisord leaves its pid file and socket: remove them, but only when the
        pid is no supervisord any more (a hung one keeps its files)."""
        s = self.settings
        pid = read_pid_file(s.supervisor_pid_file)
        if pid is not None:
            try:
                if b"supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return
            except OSError:
                pass
        remove(s.supervisor_pid_file)
        remove(s.supervisor_socket)

    # programs ----------------------------------------------------------------------------

    def _install(self, name: str, program: str, path: Path) -> None:
        """Write the program file and make supervisord's running config match it."""
        write_atomic(path, program.encode())
        proxy = self._proxy()
        try:
            added, modified, removed = proxy.supervisor.reloadConfig()[0]
        except xmlrpc.client.Fault as fault:
            raise SupervisorError(f"supervisord cannot read its configuration: "
                                  f"{fault.faultString}") from None
        for group in removed:
            with contextlib.suppress(xmlrpc.client.Fault):
                proxy.supervisor.stopProcessGroup(group)
            proxy.supervisor.removeProcessGroup(group)
        if name in modified:
            with contextlib.suppress(xmlrpc.client.Fault):
                proxy.supervisor.stopProcess(name)
            with contextlib.suppress(xmlrpc.client.Fault):
                proxy.supervisor.removeProcessGroup(name)
            added = [*added, name]
        for group in added:
            with contextlib.suppress(xmlrpc.client.Fault):
                proxy.supervisor.addProcessGroup(group)

    def _info(self, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any],
                        self._proxy(QUERY_TIMEOUT).supervisor.getProcessInfo(name))
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == BAD_NAME:
                return None
            raise

    def launch(self, role: str, instance: int, command: list[str], env: Mapping[str, str],
               log: Path) -> Callable[[], str | None]:
        s = self.settings
        name = s.name(role, instance)
        program = self.program_text(role, instance, command, env, log)
        with self.locked():
            self.ensure_running()
            self._install(name, program, s.program_file(role, instance))
        try:
            self._proxy().supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != ALREADY_STARTED:
                raise SupervisorError(f"supervisord refused to start {name}: "
                                      f"{fault.faultString}") from None

        def failure() -> str | None:
            info = self._info(name) or {"statename": "UNKNOWN"}
            state = info["statename"]
            if state not in FAILED_STATES:
                return None
            with contextlib.suppress(xmlrpc.client.Fault):
                self._proxy().supervisor.stopProcess(name)  # no retry loop after a failure
            detail = info.get("spawnerr") or info.get("description") or ""
            return f"supervisord reports it {state}" + (f" ({detail})" if detail else "")
        return failure

    def stop(self, role: str, instance: int, pid: int | None) -> Stopped:
        """supervisord sends SIGTERM, waits stopwaitsecs, then SIGKILLs the group.

        A process supervisord does not run (its supervisord was killed, or it was started with
        the plain backend) is stopped the plain way, by its verified pid.
        """
        from toolkit.daemon.plain import PlainBackend

        if not self.running():
            remove(self.settings.program_file(role, instance))
            return PlainBackend(self.settings).stop(role, instance, pid)
        name = self.settings.name(role, instance)
        started = time.monotonic()
        try:
            self._proxy().supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode not in (BAD_NAME, NOT_RUNNING):
                raise SupervisorError(f"supervisord could not stop {name}: "
                                      f"{fault.faultString}") from None
            return PlainBackend(self.settings).stop(role, instance, pid)
        finally:
            self._remove(name, self.settings.program_file(role, instance))
        if pid is not None and not wait_gone(pid, 5.0):
            return Stopped.ALIVE
        # supervisord SIGKILLs the group when stopwaitsecs (the stop timeout) runs out
        killed = time.monotonic() - started >= math.ceil(self.settings.stop_timeout) - 0.05
        return Stopped.KILLED if killed else Stopped.GONE

    def _remove(self, name: str, path: Path) -> None:
        """A stopped program is forgotten, so that it does not autostart with supervisord."""
        with self.locked():
            remove(path)
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                self._proxy().supervisor.removeProcessGroup(name)

    def program(self, role: str, instance: int) -> tuple[str | None, bool]:
        """supervisord's view of the program, and whether it is (re)starting or running it
        (then stop must go through supervisord even without a live pid). One RPC."""
        try:
            info = self._info(self.settings.name(role, instance))
        except TimeoutError:
            return f"supervisord does not answer within {QUERY_TIMEOUT:g} s", False
        except (OSError, xmlrpc.client.Error):
            return "supervisord is not running", False
        if info is None:
            return "supervisor: not configured", False
        return f"supervisor: {info['statename']}", info["statename"] in RUNNING_STATES



class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, with a timeout on connect and on every read."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)
