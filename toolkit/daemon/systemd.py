"""systemd: the units `ember daemon install-systemd` writes, and the systemd backend.

Two ways to run under systemd, chosen by the daemon backend:
- ``supervisor``: ``ember-supervisord.service`` runs the host's supervisord, which runs the roles;
- ``systemd``: ``ember-master.service`` and the template ``ember-worker@.service`` run the roles
  directly (Type=notify), and `ember daemon start|stop|status` go through systemctl.

Units are rendered on the host from templates/systemd/, from the same settings as everything
else, so they know the host's own python, directories and hostname.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from toolkit.base.files import write_atomic
from toolkit.base.procs import Stopped, wait_gone
from toolkit.daemon.settings import (
    ONE_PER_HOST,
    DaemonSettings,
    hand_over,
    run_as,
    zookeeper_data_dir,
)
from toolkit.errors import EmberError
from toolkit.render import INSTANCE, render, systemd_env

SUPERVISORD_UNIT = "ember-supervisord.service"
ROLE_UNITS = ("ember-master.service", "ember-worker@.service", "ember-zookeeper.service")
ACTIVE_STATES = ("active", "activating", "deactivating", "reloading")

Say = Callable[[str], None]


class SystemdError(EmberError, RuntimeError):
    """systemd is missing, unreachable, or refused a request; the message says which."""


def systemctl(settings: DaemonSettings, *args: str, check: bool = True,
              timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """``systemctl [--user] ARGS``; a host without a running systemd gets a clear error."""
    program = shutil.which("systemctl")
    if program is None:
        raise SystemdError("systemctl not found: this host has no systemd. Use the supervisor "
                           "or plain backend here")
    scope = ["--user"] if settings.systemd_scope == "user" else []
    try:
        done = subprocess.run([program, *scope, *args], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SystemdError(f"systemctl {' '.join(args)} took over {timeout:g} s") from None
    text = (done.stderr or done.stdout).strip()
    if "has not been booted with systemd" in text or "Failed to connect to bus" in text:
        where = "a user manager (loginctl enable-linger)" if scope else "systemd as init"
        raise SystemdError(f"systemd is not running here ({text.splitlines()[0]}); the "
                           f"{settings.systemd_scope} scope needs {where}")
    if check and done.returncode != 0:
        raise SystemdError(f"systemctl {' '.join(args)} failed (exit {done.returncode}): "
                           f"{text}")
    return done


def require_systemd(settings: DaemonSettings) -> None:
    """Raise a clear error unless systemd (of the chosen scope) runs here."""
    state = systemctl(settings, "is-system-running", check=False).stdout.strip()
    if state == "offline":
        where = "a user manager (loginctl enable-linger)" if (
            settings.systemd_scope == "user") else "systemd as init"
        raise SystemdError(f"systemd is not running here (is-system-running: offline); the "
                           f"{settings.systemd_scope} scope needs {where}")


# Rendering --------------------------------------------------------------------------------


def unit_texts(settings: DaemonSettings, python: str = sys.executable) -> dict[str, str]:
    """Every unit this host's backend needs, by file name; ``python`` is the host's venv."""
    common = _common(settings)
    if settings.backend == "supervisor":
        del common["watchdog_sec"]  # supervisord sends no WATCHDOG=1
        conf = settings.supervisor_conf  # written by install(), as `ember daemon start` does
        return {SUPERVISORD_UNIT: render(
            "systemd/ember-supervisord.service.j2", **common, type="simple",
            exec_start=[python, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
            env_file=None, nice=None, pid_file=None, log_file=None, watchdog_sec=0,
            stop_timeout=settings.stop_timeout + 10, identifier="ember-supervisord")}
    if settings.backend != "systemd":
        raise SystemdError(f"the {settings.backend} backend has no systemd units: set the "
                           f"backend to systemd or supervisor")
    texts = {}
    for role, instance, unit in (("master", "1", ROLE_UNITS[0]),
                                 ("worker", INSTANCE, ROLE_UNITS[1]),
                                 ("zookeeper", "1", ROLE_UNITS[2])):
        log = settings.log_file(role, instance) if settings.systemd_output == "file" else None
        texts[unit] = render(
            f"systemd/{unit}.j2", **common, type="notify",
            exec_start=[python, "-m", "toolkit", "daemon", "run", role,
                        instance],
            env_file=settings.systemd_env_file, nice=settings.niceness,
            pid_file=settings.pid_file(role, instance), log_file=log,
            stop_timeout=settings.stop_timeout, identifier=f"ember-{role}")
    return texts


def _common(settings: DaemonSettings) -> dict[str, object]:
    system = settings.systemd_scope == "system"
    recovery = settings.env.get("EMBER_RECOVERY_DIR")
    writable = sorted({settings.home, settings.log_dir, settings.pid_dir, settings.conf_dir,
                       settings.supervisor_dir, settings.work_dir,
                       zookeeper_data_dir(settings), *([Path(recovery)] if recovery else [])})
    return {
        "ident": settings.ident, "home": settings.home,
        "user": run_as(settings.run_user) if system else None,
        "group": settings.run_group if system else None,
        "restart_sec": settings.restart_sec, "start_timeout": settings.start_timeout,
        "limit_nofile": settings.limit_nofile, "watchdog_sec": settings.watchdog_sec,
        # Mount namespaces need privileges a user manager lacks.
        "hardening": system, "writable": writable,
        "wanted_by": "multi-user.target" if system else "default.target",
    }


# install / uninstall ----------------------------------------------------------------------


def install(settings: DaemonSettings, enable: list[str], now: bool, say: Say = print) -> int:
    """Write the units and their EnvironmentFile, daemon-reload, enable ``enable`` (and start
    them with ``now``). Directories are made first, owned by the run user, so that the
    hardening's read-write paths exist."""
    require_systemd(settings)  # before anything is written
    texts = unit_texts(settings)
    if settings.backend == "supervisor" and now:
        _refuse_foreign_supervisord(settings)
    for folder in (settings.home, settings.log_dir, settings.pid_dir, settings.conf_dir,
                   settings.supervisor_dir, settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    hand_over(settings, create=True)
    if settings.backend == "supervisor":
        from toolkit.daemon.supervisor import SupervisorBackend

        SupervisorBackend(settings).write_config()
    env = {**settings.env, "EMBER_DAEMON_BACKEND": settings.backend}
    write_atomic(settings.systemd_env_file, systemd_env(dict(env)).encode(), 0o644)
    settings.unit_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        if write_atomic(settings.unit_dir / name, text.encode(), 0o644):
            say(f"wrote {settings.unit_dir / name}")
    systemctl(settings, "daemon-reload")
    if enable:
        systemctl(settings, "enable", *(["--now"] if now else []), *enable, timeout=120)
        say(f"enabled {' '.join(enable)}" + (" and started them" if now else ""))
    return 0


def _refuse_foreign_supervisord(settings: DaemonSettings) -> None:
    """A supervisord that `ember daemon` started already owns the socket: a second one, from
    systemd, would fight it."""
    from toolkit.daemon.supervisor import SupervisorBackend

    state = systemctl(settings, "is-active", SUPERVISORD_UNIT, check=False).stdout.strip()
    if state != "active" and SupervisorBackend(settings).running():
        raise SystemdError("a supervisord started outside systemd is running on this host; "
                           "stop it first (`fab stop-all` or `ember daemon "
                           "supervisor-shutdown`), then install with --now")


def uninstall(settings: DaemonSettings, say: Say = print) -> int:
    """Stop and disable every Ember unit, remove the files, daemon-reload: nothing is left."""
    require_systemd(settings)
    names = [SUPERVISORD_UNIT, *ROLE_UNITS]
    present = [n for n in names if (settings.unit_dir / n).exists()]
    systemctl(settings, "stop", "ember-master.service", "ember-worker@*.service",
              "ember-zookeeper.service", SUPERVISORD_UNIT, check=False,
              timeout=settings.stop_timeout + 30)
    if present:
        systemctl(settings, "disable", *present, check=False)
    for wants in settings.unit_dir.glob("*.wants"):
        for link in wants.glob("ember-*.service"):  # instances enabled by hand
            link.unlink()
    for name in present:
        (settings.unit_dir / name).unlink()
        say(f"removed {settings.unit_dir / name}")
    settings.systemd_env_file.unlink(missing_ok=True)
    systemctl(settings, "daemon-reload")
    systemctl(settings, "reset-failed", "ember-*", check=False)
    if not present:
        say("no Ember units were installed")
    return 0


# The systemd backend ----------------------------------------------------------------------


class SystemdBackend:
    """`ember daemon` through systemctl: start waits for READY=1 (Type=notify), stop for the
    unit to be inactive; systemd restarts a crashed role (Restart=on-failure)."""

    name = "systemd"
    confirms_ready = True

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings

    def _unit(self, role: str, instance: int) -> str:
        if role in ONE_PER_HOST and instance != 1:
            raise SystemdError(f"the systemd backend runs one {role} per host (instance 1)")
        return self.settings.unit(role, instance)

    def prepare(self) -> None:
        """Fail early and clearly when the units are not installed. (A host whose systemd
        does not run fails at `systemctl start`, with systemctl's own words.)"""
        for unit in ROLE_UNITS:
            if not (self.settings.unit_dir / unit).exists():
                raise SystemdError(f"{self.settings.unit_dir / unit} is not installed: run "
                                   f"`fab install-systemd` (or `ember daemon install-systemd`)")

    def launch(self, role: str, instance: int, command: list[str], env: Mapping[str, str],
               log: Path) -> Callable[[], str | None]:
        """`systemctl start` returns once the role sent READY=1, or failed."""
        self.prepare()
        unit = self._unit(role, instance)
        done = systemctl(self.settings, "start", unit, check=False,
                         timeout=self.settings.start_timeout + 30)
        problem = None
        if done.returncode != 0:
            problem = f"systemctl start {unit} failed: {(done.stderr or done.stdout).strip()}"
            if self.settings.systemd_output == "journal":
                journal = subprocess.run(self.journal(role, instance, 10, False),
                                         capture_output=True, text=True, check=False)
                problem += "\n" + journal.stdout.rstrip()
        return lambda: problem

    def stop(self, role: str, instance: int, pid: int | None) -> Stopped:
        unit = self._unit(role, instance)
        systemctl(self.settings, "stop", unit, timeout=self.settings.stop_timeout + 30)
        if pid is not None and not wait_gone(pid, 5.0):
            # not its unit's process (started by another backend before): stopped the plain
            # way, by its verified pid, as the supervisor backend does
            from toolkit.daemon.plain import PlainBackend

            return PlainBackend(self.settings).stop(role, instance, pid)
        done = systemctl(self.settings, "show", unit, "--property",
                         "ExecMainCode,ExecMainStatus", check=False)
        props = dict(line.partition("=")[::2] for line in done.stdout.splitlines())
        # CLD_KILLED (2) by SIGKILL (9): TimeoutStopSec ran out
        killed = props.get("ExecMainCode") == "2" and props.get("ExecMainStatus") == "9"
        return Stopped.KILLED if killed else Stopped.GONE

    def program(self, role: str, instance: int) -> tuple[str | None, bool]:
        """systemd's view (ActiveState/SubState, restarts) and whether the unit is up or
        coming up. One systemctl call."""
        try:
            unit = self._unit(role, instance)
            done = systemctl(self.settings, "show", unit, "--property",
                             "ActiveState,SubState,NRestarts,LoadState", check=False)
        except SystemdError as exc:
            return str(exc), False
        props = dict(line.partition("=")[::2] for line in done.stdout.splitlines())
        if props.get("LoadState") == "not-found":
            return f"systemd: {unit} not installed", False
        active = props.get("ActiveState", "unknown")
        restarts = props.get("NRestarts", "0")
        detail = f"systemd: {active} ({props.get('SubState', '?')})"
        if restarts not in ("", "0"):
            detail += f", restarted {restarts}x"
        return detail, active in ACTIVE_STATES

    def journal(self, role: str, instance: int, lines: int, follow: bool) -> list[str]:
        """The journalctl command for this unit's output."""
        scope = ["--user"] if self.settings.systemd_scope == "user" else []
        unit = self._unit(role, instance)
        return ["journalctl", *scope, "--unit", unit, "--lines", str(lines), "--no-pager",
                "--output", "short-iso", *(["--follow"] if follow else [])]


def show_journal(settings: DaemonSettings, role: str, instance: int, lines: int,
                 pattern: str | None, follow: bool, say: Say) -> int:
    """`ember daemon logs` when the units write to the journal: journalctl, filtered here."""
    import re

    if shutil.which("journalctl") is None:
        raise SystemdError("journalctl not found: this host has no systemd journal")
    matcher = re.compile(pattern) if pattern else None
    wanted = lines if follow or not matcher else 1_000_000  # filter all, keep the last N
    argv = SystemdBackend(settings).journal(role, instance, wanted, follow)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        kept: list[str] = []
        with contextlib.suppress(KeyboardInterrupt):
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                if matcher and not matcher.search(line):
                    continue
                if follow:
                    say(line)
                else:
                    kept.append(line)
        for line in kept[-lines:]:
            say(line)
    return 0 if proc.returncode in (0, None, -2) else 1
