"""Daemon settings and the names of every file the daemon layer writes.

Settings come from the environment, then ``$EMBER_CONF_DIR/ember-env.sh``, then defaults (the
environment wins, so an operator can override the rendered file for one command). Pid and log
file names are decided here and nowhere else.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.daemon.envfile import parse_env_file
from toolkit.errors import ConfigError

BACKENDS = ("supervisor", "plain", "systemd")
AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes, one of them the terminating NUL
_IDENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")


@dataclass(frozen=True)
class DaemonSettings:
    home: Path
    conf_dir: Path
    log_dir: Path
    pid_dir: Path
    ident: str
    niceness: int = 0
    log_max_files: int = 5
    log_max_bytes: int = 50 * 1024 * 1024
    no_daemonize: bool = False
    stop_timeout: float = 10.0
    start_timeout: float = 30.0
    backend: str = "supervisor"
    supervisor_dir: Path = field(default=Path("."))
    systemd_scope: str = "system"
    systemd_output: str = "journal"
    run_user: str | None = None
    run_group: str | None = None
    restart_sec: float = 5.0
    limit_nofile: int = 65536
    watchdog_sec: float = 0.0
    env: Mapping[str, str] = field(default_factory=dict)
    """Every EMBER_* value (file, then environment) handed to the role's process."""
    hostname: str = field(default_factory=socket.gethostname)

    # File names ----------------------------------------------------------------------------

    # ``instance`` may be systemd's ``%i`` where a unit template names the files.

    def name(self, role: str, instance: int | str) -> str:
        return f"ember-{self.ident}-{role}-{instance}"

    def pid_file(self, role: str, instance: int | str) -> Path:
        return self.pid_dir / f"{self.name(role, instance)}.pid"

    def log_file(self, role: str, instance: int | str) -> Path:
        return self.log_dir / f"{self.name(role, instance)}-{self.hostname}.out"

    @property
    def work_dir(self) -> Path:
        return _dir(self.env.get("EMBER_WORKER_DIR") or self.home / "work")

    @property
    def systemd_env_file(self) -> Path:
        """The EnvironmentFile= of the units: ember-env.sh's values in systemd's syntax."""
        return self.conf_dir / "ember-systemd.env"

    @property
    def unit_dir(self) -> Path:
        if self.systemd_scope == "user":
            config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            return Path(config) / "systemd" / "user"
        return Path("/etc/systemd/system")

    @staticmethod
    def unit(role: str, instance: int | None = None) -> str:
        """ember-master.service, ember-worker@N.service (the template without N)."""
        if role == "master":
            return "ember-master.service"
        if role == "worker":
            return f"ember-worker@{'' if instance is None else instance}.service"
        raise ValueError(f"no unit for role {role!r}")

    def notify_name(self, role: str, instance: int) -> str:
        """An abstract socket name, stable per pid file, for readiness messages."""
        digest = hashlib.sha256(str(self.pid_file(role, instance)).encode()).hexdigest()[:16]
        return f"@ember-ready-{digest}"

    @property
    def supervisor_socket(self) -> Path:
        return self.supervisor_dir / "supervisor.sock"

    @property
    def supervisor_conf(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.supervisor_dir / "supervisord.pid"

    @property
    def supervisor_programs(self) -> Path:
        return self.supervisor_dir / "programs"

    def program_file(self, role: str, instance: int) -> Path:
        return self.supervisor_programs / f"{self.name(role, instance)}.conf"


def _int(env: Mapping[str, str], key: str, default: int, low: int, high: int,
         hint: str = "") -> int:
    text = env.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{key}={text!r} must be a whole number from {low} to {high}{hint}")
    return value


def _seconds(env: Mapping[str, str], key: str, default: float,
             allow_zero: bool = False) -> float:
    text = env.get(key, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 if allow_zero else value > 0):
        raise ConfigError(f"{key}={text!r} must be a number of seconds "
                          f"{'(0: off)' if allow_zero else 'above 0'}")
    return value


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    value = env.get(key, "").strip() or choices[0]
    if value not in choices:
        raise ConfigError(f"{key}={value!r} must be {' or '.join(choices)}")
    return value


def _name(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key, "").strip()
    if value and not _USER.fullmatch(value):
        raise ConfigError(f"{key}={value!r} is not a user or group name")
    return value or None


def _dir(value: str | Path) -> Path:
    """Absolute, so that a daemon started in another directory finds the same files."""
    return Path(value).expanduser().absolute()


def load_settings(environ: Mapping[str, str] | None = None,
                  backend: str | None = None) -> DaemonSettings:
    """Resolve settings from the environment and ember-env.sh."""
    environ = dict(os.environ if environ is None else environ)
    home = _dir(environ.get("EMBER_HOME") or Path.home() / ".ember")
    conf_dir = _dir(environ.get("EMBER_CONF_DIR") or home / "conf")
    env_file = conf_dir / "ember-env.sh"
    from_file = parse_env_file(env_file, environ) if env_file.exists() else {}
    env = {**from_file, **environ}
    if "EMBER_HOME" in from_file and "EMBER_HOME" not in environ:
        home = _dir(from_file["EMBER_HOME"])

    ident = env.get("EMBER_IDENT_STRING") or env.get("USER") or getpass.getuser()
    if not _IDENT.match(ident):
        raise ConfigError(f"EMBER_IDENT_STRING={ident!r} may hold only letters, digits, . _ -")
    chosen = backend or env.get("EMBER_DAEMON_BACKEND") or "supervisor"
    if chosen not in BACKENDS:
        raise ConfigError(f"daemon backend {chosen!r} is not one of {', '.join(BACKENDS)}")
    pid_dir = _dir(env.get("EMBER_PID_DIR") or home / "run")
    return DaemonSettings(
        home=home,
        conf_dir=conf_dir,
        log_dir=_dir(env.get("EMBER_LOG_DIR") or home / "logs"),
        pid_dir=pid_dir,
        ident=ident,
        niceness=_int(env, "EMBER_NICENESS", 0, -20, 19),
        log_max_files=_int(env, "EMBER_LOG_MAX_FILES", 5, 0, 1000, " (0 turns rotation off)"),
        log_max_bytes=_int(env, "EMBER_LOG_MAX_BYTES", 50 * 1024 * 1024, 0, 2**50,
                           " (0: no size limit under supervisor)"),
        no_daemonize=bool(env.get("EMBER_NO_DAEMONIZE")),
        stop_timeout=_seconds(env, "EMBER_STOP_TIMEOUT", 10.0),
        start_timeout=_seconds(env, "EMBER_START_TIMEOUT", 30.0),
        backend=chosen,
        supervisor_dir=_dir(env.get("EMBER_SUPERVISOR_DIR") or pid_dir),
        systemd_scope=_choice(env, "EMBER_SYSTEMD_SCOPE", ("system", "user")),
        systemd_output=_choice(env, "EMBER_SYSTEMD_OUTPUT", ("journal", "file")),
        run_user=_name(env, "EMBER_RUN_USER"),
        run_group=_name(env, "EMBER_RUN_GROUP"),
        restart_sec=_seconds(env, "EMBER_RESTART_SEC", 5.0),
        limit_nofile=_int(env, "EMBER_LIMIT_NOFILE", 65536, 64, 2**30),
        watchdog_sec=_seconds(env, "EMBER_WATCHDOG_SEC", 0.0, allow_zero=True),
        env={**{k: v for k, v in env.items() if k.startswith("EMBER_")},
             "EMBER_HOME": str(home), "EMBER_CONF_DIR": str(conf_dir)},
    )


def check_socket_path(path: Path) -> None:
    size = len(os.fsencode(path))
    if size > AF_UNIX_PATH_MAX:
        raise ConfigError(
            f"supervisor socket path {path} is {size} bytes long; unix sockets allow at most "
            f"{AF_UNIX_PATH_MAX}. Set EMBER_SUPERVISOR_DIR (or EMBER_PID_DIR) to a shorter "
            f"directory")
