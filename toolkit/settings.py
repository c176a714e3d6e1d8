"""Every setting of `ember master` and `ember worker`, declared once.

Each one names its flag, its EMBER_* variable, its parser, its default (and how help and the
README say it), its inventory key, and whether it steps by one per worker instance. The CLI
builds its flags and resolves flag -> variable -> default from here; the playbook projects an
inventory into each host's ember-env.sh from here; a test holds the README's tables to it.
Standard library only: every layer may import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError

# Parsers: text (a flag or a variable) -> value; ValueError says what is wrong -------------


def port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) < 65536:
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{text!r} must be more than 0 seconds")
    return value


def seconds_or_off(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


_MEMORY = re.compile(r"^\s*(\d+)\s*([kmgt])b?\s*$", re.IGNORECASE)
_UNIT_MB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_memory_mb(text: str, what: str = "memory") -> int:
    """Spark-style memory string (``512m``, ``2g``, ``1t``, ``1048576k``) -> MiB.

    A bare number is refused: Spark reads it as bytes, a classic way to give a worker 0 MiB.
    """
    match = _MEMORY.match(text)
    if not match:
        if text.strip().isdigit():
            raise ConfigError(f"{what} {text!r} has no unit: add m or g, as in {text.strip()}m")
        raise ConfigError(f"{what} {text!r} is not a memory size like 512m or 2g")
    mb = int(int(match.group(1)) * _UNIT_MB[match.group(2).lower()])
    if mb < 1:
        raise ConfigError(f"{what} {text!r} is less than 1 MiB")
    return mb


def memory(text: str) -> int:
    try:
        return parse_memory_mb(text)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("memory ")) from None


# The registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str             # the runtime config's field
    role: str             # master or worker
    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any          # None: computed where the process runs (see ``shown``)
    shown: str            # the default as help and the README say it
    help: str
    key: str | None = None  # the inventory key, if the playbook sets it per host
    kind: str = "value"   # how the playbook projects it: value, path or address
    step: bool = False    # + (instance - 1) for the instance-th worker on a host
    metavar: str | None = None


def _s(*args: Any, **kwargs: Any) -> Setting:
    return Setting(*args, **kwargs)


SETTINGS: tuple[Setting, ...] = (
    _s("host", "master", "--host", "EMBER_MASTER_HOST", str, None, "this machine's FQDN",
       "address to bind and advertise", key="bind_host", kind="address"),
    _s("port", "master", "--port", "EMBER_MASTER_PORT", port, 7077, "7077",
       "RPC port (0 = any free port)", key="port"),
    _s("webui_port", "master", "--webui-port", "EMBER_MASTER_WEBUI_PORT", port, 8080, "8080",
       "HTTP port for `/json` and `/readyz`", key="webui_port"),
    _s("worker_timeout", "master", "--worker-timeout", "EMBER_WORKER_TIMEOUT", seconds, 60.0,
       "60", "seconds without a heartbeat before a worker is DEAD", key="worker_timeout",
       metavar="SECONDS"),
    _s("rest_port", "master", "--rest-port", "EMBER_MASTER_REST_PORT", port, None, "off",
       "serve the REST submission API on this port (Spark's is 6066)", key="rest_port"),
    _s("host", "worker", "--host", "EMBER_WORKER_HOST", str, None, "this machine's FQDN",
       "address to bind and advertise", key="bind_host", kind="address"),
    _s("port", "worker", "--port", "EMBER_WORKER_PORT", port, 0, "random", "RPC port",
       step=True),
    _s("webui_port", "worker", "--webui-port", "EMBER_WORKER_WEBUI_PORT", port, 8081, "8081",
       "HTTP port", key="worker_webui_port", step=True),
    _s("cores", "worker", "--cores", "EMBER_WORKER_CORES", positive_int, None, "all CPUs",
       "cores to offer", key="cores"),
    _s("memory", "worker", "--memory", "EMBER_WORKER_MEMORY", memory, None,
       "RAM - 1g, at least 1g", "memory to offer: `512m`, `2g`, `1t`. A bare number is "
       "refused, because Spark reads it as bytes", key="memory"),
    _s("work_dir", "worker", "--work-dir", "EMBER_WORKER_DIR", Path, None, "`$EMBER_HOME/work`",
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
)


def of_role(role: str) -> tuple[Setting, ...]:
    return tuple(s for s in SETTINGS if s.role == role)


def default_of(role: str, name: str) -> Any:
    """A setting's built-in default, for the runtime's own config defaults."""
    return next(s.default for s in SETTINGS if s.role == role and s.name == name)


def resolve(setting: Setting, flag: str | None, environ: dict[str, str],
            computed: Callable[[], Any] | None = None) -> Any:
    """The flag if given, else the variable, else the default (or ``computed()``); a bad value
    is a ConfigError that names the flag or the variable."""
    if flag is not None:
        source, text = setting.flag, flag
    elif environ.get(setting.env):
        source, text = setting.env, environ[setting.env]
    else:
        return computed() if computed is not None and setting.default is None else (
            setting.default)
    try:
        return setting.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
