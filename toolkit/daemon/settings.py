"""Daemon settings and the names of every file the daemon layer writes.

Settings come from the environment, then ``$EMBER_CONF_DIR/ember-env.sh``, then defaults (the
environment wins, so an operator can override the rendered file for one command). Pid and log
file names are decided here and nowhere else.
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.base.envfile import parse_env_file
from toolkit.base.files import open_dir
from toolkit.errors import ConfigError
from toolkit.settings import default_home, default_of, named, of_role, resolve

ROLES = ("zookeeper", "master", "worker")
"""What `ember daemon` runs: a ZooKeeper server of the cluster's own ensemble, a master, and
workers (several per host: instances)."""
ONE_PER_HOST = ("zookeeper", "master")

DEFAULT_RUN_USER = "ember"
"""Who roles run as when Ember is started as root and run_user is unset."""



def run_as(run_user: str | None) -> str | None:
    """Who roles started by root run as: run_user, by default DEFAULT_RUN_USER; None when it
    says root (the operator asked for root)."""
    name = run_user or DEFAULT_RUN_USER
    return None if name == "root" else name


AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes, one of them the terminating NUL


@dataclass(frozen=True)
class DaemonSettings:
    home: Path
    conf_dir: Path
    log_dir: Path
    pid_dir: Path
    ident: str
    niceness: int = default_of("daemon", "niceness")
    log_max_files: int = default_of("daemon", "log_max_files")
    log_max_bytes: int = default_of("daemon", "log_max_bytes")
    no_daemonize: bool = default_of("daemon", "no_daemonize")
    stop_timeout: float = default_of("daemon", "stop_timeout")
    start_timeout: float = default_of("daemon", "start_timeout")
    backend: str = default_of("daemon", "backend")
    supervisor_dir: Path = field(default=Path("."))
    systemd_scope: str = default_of("systemd", "systemd_scope")
    systemd_output: str = default_of("systemd", "systemd_output")
    run_user: str | None = default_of("systemd", "run_user")
    run_group: str | None = default_of("systemd", "run_group")
    restart_sec: float = default_of("systemd", "restart_sec")
    limit_nofile: int = default_of("systemd", "limit_nofile")
    watchdog_sec: float = default_of("systemd", "watchdog_sec")
    env: Mapping[str, str] = field(default_factory=dict)
    """Every EMBER_* value (file, then environment) handed to the role's process."""
    hostname: str = field(default_factory=socket.gethostname)

    @property
    def group(self) -> str | None:
        """The group of ``user``: run_group, else the user's own (never root's by default)."""
        user = self.user
        if user is None:
            return None
        try:
            return self.run_group or grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        except KeyError:
            return self.run_group

    @property
    def user(self) -> str | None:
        """Who roles run as when that is not who runs `ember daemon`: as root, run_as();
        None otherwise (a user's roles, and a user manager's units, run as that user)."""
        if os.geteuid() != 0 or (self.backend == "systemd" and self.systemd_scope == "user"):
            return None
        return run_as(self.run_user)

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
        return _dir(resolve(named("worker", "work_dir"), None, self.env,
                            lambda: self.home / "work"))

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
        """ember-master.service, ember-zookeeper.service, ember-worker@N.service (the
        template without N)."""
        if role in ONE_PER_HOST:
            return f"ember-{role}.service"
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


def _dir(value: str | Path) -> Path:
    """Absolute, so that a daemon started in another directory finds the same files."""
    return Path(value).expanduser().absolute()


_SETTINGS = {s.name: s for s in of_role("daemon") + of_role("systemd")}
_CHAINED = ("home", "conf_dir", "log_dir", "pid_dir", "supervisor_dir", "ident")
"""Resolved one by one: their defaults follow from one another (``$EMBER_HOME/run``, ...)."""


def load_settings(environ: Mapping[str, str] | None = None, backend: str | None = None,
                  scope: str | None = None) -> DaemonSettings:
    """Resolve settings from the flags (``--backend``, ``--scope``), the environment and
    ember-env.sh, through the settings registry; a bad value names its flag or variable."""
    environ = dict(os.environ if environ is None else environ)
    flags = {"backend": backend, "systemd_scope": scope}

    def value(name: str, env: Mapping[str, str], computed: Callable[[], Any] | None = None
              ) -> Any:
        return resolve(_SETTINGS[name], flags.get(name), env, computed)

    home = _dir(value("home", environ, default_home))
    conf_dir = _dir(value("conf_dir", environ, lambda: home / "conf"))
    env_file = conf_dir / "ember-env.sh"
    from_file = parse_env_file(env_file, environ) if env_file.exists() else {}
    env = {**from_file, **environ}
    home = _dir(value("home", env, default_home))  # ember-env.sh may move it (not conf_dir)
    pid_dir = _dir(value("pid_dir", env, lambda: home / "run"))
    user = env.get("EMBER_IDENT_STRING") or env.get("USER") or getpass.getuser()  # checked too
    return DaemonSettings(
        home=home,
        conf_dir=conf_dir,
        log_dir=_dir(value("log_dir", env, lambda: home / "logs")),
        pid_dir=pid_dir,
        supervisor_dir=_dir(value("supervisor_dir", env, lambda: pid_dir)),
        ident=value("ident", {"EMBER_IDENT_STRING": user}),
        **{name: value(name, env) for name in _SETTINGS if name not in _CHAINED},
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


def hand_over(settings: DaemonSettings, files: Sequence[Path] = (), create: bool = False,
              role: str | None = None) -> None:
    """Run as root for roles that run as another user (settings.user): with ``create``, that
    user is made when missing and must be able to run this Python. Then the directories the
    roles write (logs, pid files and supervisord's, the work dir, the masters' records, a
    ZooKeeper server's data) and the files directly in them become that user's, and so do
    the private files just installed (the secret, the TLS key: a role refuses a secret it
    does not own). Home and conf stay root's, 0755 and at most 0711: root runs the venv
    under home and reads conf's ember-env.sh, which the run user (and so any job) must not
    be able to change. Nothing when not root, or when the roles run as root."""
    user = settings.user
    if user is None:
        return
    if create:
        ensure_user(user, settings.home)
        check_reachable(user, settings.run_group)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return  # status, stop, logs of a host where nothing was ever started as that user
    uid, gid = entry.pw_uid, grp.getgrnam(settings.run_group).gr_gid if (
        settings.run_group) else entry.pw_gid
    keep = [settings.home, settings.conf_dir]
    if (settings.conf_dir / "tls").is_dir():
        keep.append(settings.conf_dir / "tls")
    if settings.backend == "systemd":  # systemd opens the logs, as root
        keep.append(settings.log_dir)
    for folder in keep:
        _keep_root(folder)
    for folder in _role_dirs(settings, role):
        fd = open_dir(folder)
        try:
            os.fchown(fd, uid, gid)
            if folder != settings.work_dir:  # records, logs, pid files
                for found in os.scandir(fd):
                    if found.is_file(follow_symlinks=False) and found.stat(
                            follow_symlinks=False).st_nlink == 1:  # not a hard link to /etc
                        os.chown(found.name, uid, gid, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)
    for path in files:
        fd = open_dir(path.parent)
        try:
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(path.name, dir_fd=fd, follow_symlinks=False)
                if not info.st_mode & 0o077:  # private: the role's own; the rest root's
                    os.chown(path.name, uid, gid, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)


def _keep_root(folder: Path) -> None:
    """``folder`` root's, which the run user may pass through but not change (an earlier
    Ember handed it over)."""
    fd = open_dir(folder)
    try:
        info = os.fstat(fd)
        if info.st_uid != 0 or info.st_gid != 0:
            os.fchown(fd, 0, 0)
        mode = (info.st_mode & 0o755) | 0o711
        if mode != info.st_mode & 0o777:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _role_dirs(settings: DaemonSettings, role: str | None) -> list[Path]:
    """The directories the roles write in, as their run user. Logs are systemd's own under
    the systemd backend (it opens them as root, so the run user must not own their
    directory), supervisord's otherwise."""
    recovery = settings.env.get("EMBER_RECOVERY_DIR")  # the masters' records, when on files
    dirs = [settings.pid_dir, settings.work_dir, *([Path(recovery)] if recovery else [])]
    if settings.backend != "systemd":
        dirs += [settings.log_dir, settings.supervisor_dir]
    if role == "zookeeper" or settings.env.get("EMBER_ZOOKEEPER_SERVERS"):
        dirs.append(zookeeper_data_dir(settings))
    return dirs


def zookeeper_data_dir(settings: DaemonSettings) -> Path:
    return Path(settings.env.get("EMBER_ZOOKEEPER_DATA_DIR") or settings.home / "zookeeper")


def ensure_user(name: str, home: Path) -> bool:
    """Create ``name`` as an unprivileged system user (no login shell, no home made) unless it
    exists; True if it was made."""
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    for _ in range(20):
        done = subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                               "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return True
        try:  # made meanwhile by another `ember daemon` on this host (a master, a worker)
            pwd.getpwnam(name)
            return False
        except KeyError:
            time.sleep(0.1)  # whose useradd may still hold the lock of /etc/passwd
    raise ConfigError(f"cannot create the run user {name!r} ({useradd} exited "
                      f"{done.returncode}: {done.stderr.strip()}); create it, or set "
                      f"run_user to an existing user")


def check_reachable(user: str, group: str | None) -> None:
    """The run user must be able to run this Python (a directory on its path may be closed to
    it, such as /root for a Python under it)."""
    python = sys.executable
    group = group or grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name  # not root's group
    said = ""
    try:
        done = subprocess.run([python, "-c", "import toolkit"], user=user, group=group,
                              extra_groups=[], capture_output=True, text=True, check=False,
                              cwd="/", timeout=60)
        runs = done.returncode == 0
        said = (done.stderr.strip().splitlines() or [""])[-1]
    except OSError as exc:  # the exec itself was refused
        runs, said = False, exc.strerror or str(exc)
    if not runs:
        real = Path(python).resolve()  # a venv's python links to its base's
        closed = next((str(p) for p in [*reversed(real.parents), real]
                       if not os.stat(p).st_mode & 0o001), None)
        where = f" ({closed} is closed to other users)" if closed else f" ({said})"
        raise ConfigError(
            f"the run user {user!r} cannot run {python}{where}: install Ember where {user} can "
            f"read it (`fab deploy` makes a venv under ember_home), or set run_user: root to "
            f"run the roles as root")
