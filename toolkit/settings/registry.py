"""The registry: every setting, once, and how a value is resolved.

A setting names its EMBER_* variable, its flag, its parser, its default (and how help and the
README say it), its inventory key, and whether it steps by one per worker instance. Roles:
``master``, ``worker`` and ``zookeeper`` (their flags), ``common`` (flags of master and
worker), ``daemon`` and ``systemd`` (read by `ember daemon` from the environment and
ember-env.sh: host-wide), ``submit`` (flags of `ember submit`) and ``inventory`` (keys only
the playbook reads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError
from toolkit.settings.parsers import (
    choice,
    fixed_port,
    ident,
    memory,
    one_line,
    path,
    port,
    positive_int,
    present,
    seconds,
    seconds_or_off,
    servers,
    user_name,
    whole_number,
)

HOME = "~/.ember"
"""EMBER_HOME when it is not set; also the inventory's ember_home on `localhost` hosts."""
REMOTE_HOME = "/opt/ember"
"""The inventory's ember_home on every other host."""
BACKENDS = ("supervisor", "plain", "systemd")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def default_home() -> Path:
    return Path(HOME).expanduser()


@dataclass(frozen=True)
class Setting:
    name: str             # the field of the config that holds the value
    role: str             # see the module's docstring
    flag: str             # "" when there is none
    env: str              # the EMBER_* variable; "" for an inventory-only key
    parse: Callable[[str], Any]
    default: Any          # None: computed where the process runs (see ``shown``), or unset
    shown: str            # the default as help and the README say it
    help: str
    key: str | None = None  # the inventory key, if the playbook sets it per host
    kind: str = "value"   # how the playbook projects it: value, path or address
    step: bool = False    # + (instance - 1) for the instance-th worker on a host
    metavar: str | None = None
    key_parse: Callable[[str], Any] | None = None  # the inventory's parser, if stricter
    builtin: bool = False  # the inventory's lookup ends at ``default`` (else: unset)


def _s(*args: Any, **kwargs: Any) -> Setting:
    return Setting(*args, **kwargs)


_ROLES: tuple[Setting, ...] = (
    _s("host", "master", "--host", "EMBER_MASTER_HOST", one_line, None, "this machine's FQDN",
       "address to bind and advertise", key="bind_host", kind="address"),
    _s("port", "master", "--port", "EMBER_MASTER_PORT", port, 7077, "7077",
       "RPC port (0 = any free port)", key="port", key_parse=fixed_port, builtin=True),
    _s("webui_port", "master", "--webui-port", "EMBER_MASTER_WEBUI_PORT", port, 8080, "8080",
       "HTTP port for `/json` and `/readyz`", key="webui_port", key_parse=fixed_port,
       builtin=True),
    _s("worker_timeout", "master", "--worker-timeout", "EMBER_WORKER_TIMEOUT", seconds, 60.0,
       "60", "seconds without a heartbeat before a worker is DEAD", key="worker_timeout",
       metavar="SECONDS"),
    _s("rest_port", "master", "--rest-port", "EMBER_MASTER_REST_PORT", port, None, "off",
       "serve the REST submission API on this port (Spark's is 6066)", key="rest_port",
       key_parse=fixed_port),
    _s("max_connections", "master", "--max-connections", "EMBER_MASTER_MAX_CONNECTIONS",
       positive_int, None, "open-file limit - 64 - the HTTP ports' share",
       "connections held at once (workers, applications, clients); more are refused. At start "
       "the master raises its open-file limit to the hard limit", metavar="N"),
    _s("max_handshakes", "master", "--max-handshakes", "EMBER_MASTER_MAX_HANDSHAKES",
       positive_int, None, "(open-file limit - 64) / 4, at least 256",
       "handshakes at once from peers that never authenticated; more are refused until one "
       "ends (peers that did are never held back by them)",
       metavar="N"),
    _s("max_handshakes_per_host", "master", "--max-handshakes-per-host",
       "EMBER_MASTER_MAX_HANDSHAKES_PER_HOST", positive_int, 16, "16",
       "handshakes at once from any one source (an IPv4 address, an IPv6 /64)", metavar="N"),
    _s("recovery_mode", "master", "--recovery-mode", "EMBER_RECOVERY_MODE",
       choice("none", "filesystem", "zookeeper"), "none", "`none`",
       "`filesystem`: keep workers, drivers and applications in --recovery-dir; `zookeeper`: "
       "in ZooKeeper (--zookeeper-url); a restarted master, or a standby, recovers them; "
       "`none`: keep nothing",
       metavar="MODE"),
    _s("recovery_dir", "master", "--recovery-dir", "EMBER_RECOVERY_DIR", path, None, "none",
       "the directory of filesystem recovery; the master that holds its lock leads, another "
       "on it waits as a standby", metavar="DIR"),
    _s("zookeeper_url", "master", "--zookeeper-url", "EMBER_ZOOKEEPER_URL", one_line, None,
       "none", "ZooKeeper's `HOST:PORT[,HOST:PORT...]`, for recovery mode `zookeeper`: the "
       "master that holds its lock leads", metavar="HOSTS"),
    _s("zookeeper_dir", "master", "--zookeeper-dir", "EMBER_ZOOKEEPER_DIR", one_line,
       "/ember", "`/ember`", "the root of the recovery records in ZooKeeper", metavar="PATH"),
    _s("host", "worker", "--host", "EMBER_WORKER_HOST", one_line, None, "this machine's FQDN",
       "address to bind and advertise", key="bind_host", kind="address"),
    _s("port", "worker", "--port", "EMBER_WORKER_PORT", port, 0, "random", "RPC port",
       step=True),
    _s("webui_port", "worker", "--webui-port", "EMBER_WORKER_WEBUI_PORT", port, 8081, "8081",
       "HTTP port", key="worker_webui_port", step=True, key_parse=fixed_port, builtin=True),
    _s("cores", "worker", "--cores", "EMBER_WORKER_CORES", positive_int, None, "all CPUs",
       "cores to offer", key="cores"),
    _s("memory", "worker", "--memory", "EMBER_WORKER_MEMORY", memory, None,
       "RAM - 1g, at least 1g", "memory to offer: `512m`, `2g`, `1t`. A bare number is "
       "refused, because Spark reads it as bytes", key="memory"),
    _s("work_dir", "worker", "--work-dir", "EMBER_WORKER_DIR", path, None, "`$EMBER_HOME/work`",
       "where drivers and executors will run", key="work_dir", kind="path"),
    _s("register_timeout", "worker", "--register-timeout", "EMBER_WORKER_REGISTER_TIMEOUT",
       seconds, 600.0, "600", "exit 1 when no master has accepted the worker for this long",
       metavar="SECONDS"),
    _s("cleanup_interval", "worker", "--cleanup-interval", "EMBER_WORKER_CLEANUP_INTERVAL",
       seconds_or_off, 1800.0, "1800",
       "seconds between work dir cleanups; 0 turns cleanup off", key="cleanup_interval",
       metavar="SECONDS"),
    _s("cleanup_ttl", "worker", "--cleanup-ttl", "EMBER_WORKER_CLEANUP_TTL", seconds,
       604800.0, "604800 (7 days)", "age after which a finished driver or app dir is removed",
       key="cleanup_ttl", metavar="SECONDS"),
    _s("kill_timeout", "worker", "--kill-timeout", "EMBER_WORKER_KILL_TIMEOUT", seconds, 10.0,
       "10", "a killed driver or executor gets SIGKILL after this long", metavar="SECONDS"),
    _s("server_id", "zookeeper", "--id", "EMBER_ZOOKEEPER_ID", whole_number(1, 255), None,
       "required", "this server's number: its place in --servers, from 1 (ZooKeeper's myid)",
       metavar="N"),
    _s("servers", "zookeeper", "--servers", "EMBER_ZOOKEEPER_SERVERS", servers, None,
       "required", "the whole ensemble, in order: `HOST:PEER_PORT:ELECTION_PORT[,...]`, an "
       "odd number of servers", metavar="LIST"),
    _s("client_port", "zookeeper", "--client-port", "EMBER_ZOOKEEPER_CLIENT_PORT", fixed_port,
       2181, "2181", "the port masters connect to, on this server's host in --servers"),
    _s("data_dir", "zookeeper", "--data-dir", "EMBER_ZOOKEEPER_DATA_DIR", path, None,
       "`$EMBER_HOME/zookeeper`", "its snapshots and transaction log, and the zoo.cfg and "
       "myid written from these flags", metavar="DIR"),
    _s("tick_ms", "zookeeper", "--tick-ms", "EMBER_ZOOKEEPER_TICK_MS", whole_number(100, 60000),
       2000, "2000", "ZooKeeper's tickTime: sessions last 2 to 20 ticks (masters ask for 4 s)",
       metavar="MS"),
    _s("heap", "zookeeper", "--heap", "EMBER_ZOOKEEPER_HEAP", memory, 256, "256m",
       "the JVM's heap (`-Xmx`)"),
    _s("classpath", "zookeeper", "--classpath", "EMBER_ZOOKEEPER_CLASSPATH", one_line,
       "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar",
       "Debian's: `/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar`",
       "the host's ZooKeeper installation, and a logger for its log", metavar="PATH"),
    _s("secret_file", "common", "--secret-file", "EMBER_SECRET_FILE", path, None, "none",
       "the cluster secret. The file must not be readable by group or others, and must hold "
       "at least 16 bytes; one per line while a rotation runs (the first proves, all are "
       "accepted)", metavar="FILE"),
    _s("tls_dir", "common", "--tls-dir", "EMBER_TLS_DIR", path, None, "none (plain TCP)",
       "TLS on the RPC, web UI and REST ports: the directory holding the cluster CA "
       "(`ca.pem`) and this host's `cert.pem` and `key.pem` (mode 0600), which the playbook "
       "makes", metavar="DIR"),
    _s("ui_login", "common", "--ui-login", "EMBER_UI_LOGIN", choice("actions", "always"),
       "actions", "`actions`", "with a cluster secret, what the web UI needs a login for: "
       "`actions` (killing; reading is open) or `always` (every page and `/json` too)",
       key="ui_login", metavar="actions|always"),
    _s("log_level", "common", "--log-level", "EMBER_LOG_LEVEL", choice(*LOG_LEVELS), "INFO",
       "INFO", "DEBUG, INFO, WARNING or ERROR", metavar="|".join(LOG_LEVELS)),
    _s("cores", "submit", "--cores", "", positive_int, 1, "1", "cores reserved on the worker"),
    _s("memory", "submit", "--memory", "", memory, 1024, "1g", "memory reserved, like 512m"),
)

# Host-wide: one value per host, whatever roles it runs. In the order ember-env.sh lists them.
_HOST: tuple[Setting, ...] = (
    _s("home", "daemon", "", "EMBER_HOME", path, None, f"`{HOME}`",
       f"base for the directories below (on an inventory's remote hosts: `{REMOTE_HOME}`)",
       key="ember_home", kind="path"),
    _s("conf_dir", "daemon", "", "EMBER_CONF_DIR", path, None, "`$EMBER_HOME/conf`",
       "holds `ember-env.sh`"),
    _s("niceness", "daemon", "", "EMBER_NICENESS", whole_number(-20, 19), 0, "0",
       "nice level, -20 to 19", key="nice", builtin=True),
    _s("log_max_files", "daemon", "", "EMBER_LOG_MAX_FILES",
       whole_number(0, 1000, " (0 turns rotation off)"), 5, "5",
       "old logs kept; 0 turns rotation off (the log is appended to)", key="log_max_files",
       builtin=True),
    _s("stop_timeout", "daemon", "", "EMBER_STOP_TIMEOUT", seconds, 10.0, "10",
       "seconds between SIGTERM and SIGKILL", key="stop_timeout", builtin=True),
    _s("log_dir", "daemon", "", "EMBER_LOG_DIR", path, None, "`$EMBER_HOME/logs`",
       "`.out` logs and supervisord's log", key="log_dir", kind="path"),
    _s("pid_dir", "daemon", "", "EMBER_PID_DIR", path, None, "`$EMBER_HOME/run`",
       "pid files (never /tmp)", key="pid_dir", kind="path"),
    _s("ident", "daemon", "", "EMBER_IDENT_STRING", ident, None, "`$USER`",
       "the `$IDENT` in file names"),
    _s("log_max_bytes", "daemon", "", "EMBER_LOG_MAX_BYTES",
       whole_number(0, 2**50, " (0: no size limit under supervisor)"), 50 * 1024 * 1024,
       "52428800", "supervisor only: rotate a log when it grows past this size"),
    _s("start_timeout", "daemon", "--timeout", "EMBER_START_TIMEOUT", seconds, 30.0, "30",
       "seconds start waits for readiness (`--timeout` makes it sooner)", metavar="SECONDS"),
    _s("no_daemonize", "daemon", "", "EMBER_NO_DAEMONIZE", present, False, "unset",
       "any value: run in the foreground"),
    _s("backend", "daemon", "--backend", "EMBER_DAEMON_BACKEND", choice(*BACKENDS), BACKENDS[0],
       f"`{BACKENDS[0]}`", "or `plain`, or `systemd` (`--backend` overrides it; an inventory "
       "sets it in `cluster.backend`)", metavar="|".join(BACKENDS)),
    _s("supervisor_dir", "daemon", "", "EMBER_SUPERVISOR_DIR", path, None, "`$EMBER_PID_DIR`",
       "supervisord's files. The socket path must fit in 107 bytes: a longer one is refused "
       "with an explanation"),
    _s("systemd_scope", "systemd", "--scope", "EMBER_SYSTEMD_SCOPE", choice("system", "user"),
       "system", "`system`", "or `user`: the units of the SSH user's manager, in "
       "`~/.config/systemd/user` (needs lingering). `--scope` overrides it",
       key="systemd_scope", metavar="system|user"),
    _s("systemd_output", "systemd", "", "EMBER_SYSTEMD_OUTPUT", choice("journal", "file"),
       "journal", "`journal`", "or `file`: appended to the role's `.out` log",
       key="systemd_output"),
    _s("run_user", "systemd", "", "EMBER_RUN_USER", user_name, None, "`ember`",
       "who roles and their jobs run as when Ember is started as root (systemd's `User=`, "
       "supervisord's `user=`): a system user, created when missing. Roles run as root only "
       "when this says `root`", key="run_user"),
    _s("run_group", "systemd", "", "EMBER_RUN_GROUP", user_name, None, "unset: the user's",
       "`Group=` of the role units (system scope)", key="run_group"),
    _s("restart_sec", "systemd", "", "EMBER_RESTART_SEC", seconds, 5.0, "5",
       "`RestartSec=`: seconds before `Restart=on-failure` starts a failed role again",
       key="restart_sec"),
    _s("limit_nofile", "systemd", "", "EMBER_LIMIT_NOFILE", whole_number(64, 2**30), 65536,
       "65536", "`LimitNOFILE=`: open files a role may hold", key="limit_nofile"),
    _s("watchdog_sec", "systemd", "", "EMBER_WATCHDOG_SEC", seconds_or_off, 0.0, "0 (off)",
       "`WatchdogSec=`: the role sends `WATCHDOG=1` at half of it", key="watchdog_sec"),
)

_INVENTORY: tuple[Setting, ...] = (
    _s("python", "inventory", "", "", path, None, "`<ember_home>/venv/bin/python`",
       "the hosts' python (on `localhost`: the one running the playbook)", key="python",
       kind="path"),
    _s("instances", "inventory", "", "", whole_number(1, 64), 1, "1",
       "worker instances on the host", key="instances", builtin=True),
    _s("ssh_port", "inventory", "", "", fixed_port, None, "`ssh.port`",
       "the host's SSH port", key="ssh_port"),
)

SETTINGS: tuple[Setting, ...] = _ROLES + _HOST + _INVENTORY


def of_role(role: str) -> tuple[Setting, ...]:
    return tuple(s for s in SETTINGS if s.role == role)


def named(role: str, name: str) -> Setting:
    found = [s for s in SETTINGS if s.role == role and s.name == name]
    if not found:
        raise KeyError(f"no setting {name!r} of role {role!r}")
    return found[0]


def default_of(role: str, name: str) -> Any:
    """A setting's built-in default, for the runtime's own config defaults."""
    return named(role, name).default


def host_wide() -> tuple[Setting, ...]:
    """The settings of a whole host that an inventory sets (``key``), in ember-env.sh's order.

    ``kind`` is ``path`` (read with ``Inventory.path_setting``) or ``value``
    (``Inventory.setting``). Those with ``builtin`` always have a value."""
    return tuple(s for s in _HOST if s.key is not None)


def inventory_keys() -> dict[str, Setting]:
    """Every per-host inventory key, with the setting that checks it (the first declared)."""
    keys: dict[str, Setting] = {}
    for setting in SETTINGS:
        if setting.key is not None:
            keys.setdefault(setting.key, setting)
    return keys


def parsed(source: str, text: str, parse: Callable[[str], Any]) -> Any:
    """``parse(text)``; a bad value is a ConfigError that begins with ``source``."""
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def resolve(setting: Setting, flag: str | None, environ: Mapping[str, str],
            computed: Callable[[], Any] | None = None) -> Any:
    """The flag if given, else the variable (if set and not blank), else the default (or
    ``computed()`` where the default is None); a bad value is a ConfigError that names the
    flag or the variable."""
    if flag is not None:
        return parsed(setting.flag or setting.env, flag, setting.parse)
    text = environ.get(setting.env, "") if setting.env else ""
    if text.strip():
        return parsed(setting.env, text, setting.parse)
    if setting.default is None and computed is not None:
        return computed()
    return setting.default
