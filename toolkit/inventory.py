"""The inventory: which hosts run masters and workers, how to reach them, and their settings.

YAML (see inventory/example.yml) or a Spark-style ``workers`` file. Every per-host setting is
looked up host -> group (masters/workers ``vars``) -> ``defaults`` -> built-in, in ``setting()``.
Errors name the file and the key or host.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError
from toolkit.settings import SETTINGS

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

CLUSTER_KEYS = {"name", "secret_file", "backend"}
SSH_KEYS = {"user", "port", "key_file", "known_hosts", "host_key_policy", "connect_timeout",
            "jump_host"}
HOST_KEYS = {
    # shared by every host
    "ember_home", "python", "log_dir", "pid_dir", "nice", "log_max_files", "stop_timeout",
    "bind_host", "ssh_port",
    # systemd units (fab install-systemd)
    "systemd_scope", "systemd_output", "run_user", "run_group", "restart_sec", "limit_nofile",
    "watchdog_sec",
    # masters
    "port", "webui_port", "worker_timeout", "rest_port",
    # workers
    "cores", "memory", "instances", "work_dir", "worker_webui_port", "cleanup_interval",
    "cleanup_ttl",
}
BUILTIN: dict[str, Any] = {
    "nice": 0, "log_max_files": 5, "stop_timeout": 10, "instances": 1,
    # the roles' own defaults, from the settings registry
    **{s.key: s.default for s in SETTINGS if s.key in ("port", "webui_port", "worker_webui_port")},
}
_INT_KEYS = {"nice", "log_max_files", "port", "webui_port", "instances", "worker_webui_port",
             "ssh_port", "cores", "limit_nofile", "rest_port"}
_RANGES = {"nice": (-20, 19), "log_max_files": (0, 1000), "port": (1, 65535),
           "webui_port": (1, 65535), "worker_webui_port": (1, 65535), "ssh_port": (1, 65535),
           "rest_port": (1, 65535),
           "instances": (1, 64), "cores": (1, 100_000), "limit_nofile": (64, 2**30)}
_STR_KEYS = {"ember_home", "python", "log_dir", "pid_dir", "work_dir", "bind_host"}
_NAME_KEYS = {"run_user", "run_group"}
_CHOICES = {"systemd_scope": ("system", "user"), "systemd_output": ("journal", "file")}
_USER = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")
_HOST = re.compile(r"^(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9._:-]+|\[[0-9a-fA-F:]+\])$")


@dataclass(frozen=True)
class SSHSettings:
    user: str | None = None
    port: int = 22
    key_file: Path | None = None
    known_hosts: Path = field(default_factory=lambda: Path("~/.ssh/known_hosts").expanduser())
    host_key_policy: str = "reject"
    connect_timeout: float = 10.0
    jump_host: str | None = None


@dataclass(frozen=True)
class HostEntry:
    """One host in one group, with its own variables."""

    address: str
    group: str
    vars: dict[str, Any]

    @property
    def local(self) -> bool:
        return self.address in LOCAL_NAMES


@dataclass(frozen=True)
class Inventory:
    path: Path
    name: str
    backend: str
    secret_file: Path
    ssh: SSHSettings
    defaults: dict[str, Any]
    group_vars: dict[str, dict[str, Any]]
    masters: tuple[HostEntry, ...]
    workers: tuple[HostEntry, ...]

    def setting(self, host: HostEntry, key: str) -> Any:
        """host -> group -> defaults -> built-in: the one place settings are looked up."""
        for scope in (host.vars, self.group_vars.get(host.group, {}), self.defaults):
            if key in scope:
                return scope[key]
        if key == "python":
            return sys.executable if host.local else f"{self.home(host)}/venv/bin/python"
        if key == "ember_home":
            return "~/.ember" if host.local else "/opt/ember"
        return BUILTIN.get(key)

    def home(self, host: HostEntry) -> str:
        return self.path_setting(host, "ember_home") or ""

    def path_setting(self, host: HostEntry, key: str) -> str | None:
        """A path: ``~`` and relative paths are allowed for local hosts only."""
        value = self.setting(host, key)
        if value is None:
            return None
        text = str(value)
        if host.local:
            expanded = Path(text).expanduser()
            full = expanded if expanded.is_absolute() else self.path.parent.absolute() / expanded
            return os.path.normpath(full)
        if not text.startswith("/"):
            raise ConfigError(f"{self.path}: {key} {text!r} for host {host.address} must be an "
                              f"absolute path (it is used on that host)")
        return text

    @property
    def hosts(self) -> tuple[HostEntry, ...]:
        return self.masters + self.workers

    def master_url(self) -> str:
        parts = []
        for master in self.masters:
            host = self.advertised(master)
            host = f"[{host}]" if ":" in host else host
            parts.append(f"{host}:{self.setting(master, 'port')}")
        return "ember://" + ",".join(parts)

    def advertised(self, host: HostEntry) -> str:
        """The address a role binds and tells its peers."""
        bind = self.setting(host, "bind_host")
        if bind:
            return str(bind)
        return "127.0.0.1" if host.local else host.address.rpartition("@")[2]


# Loading ---------------------------------------------------------------------------------


def load(path: str | Path | None = None) -> Inventory:
    """Load the inventory at ``path``, $EMBER_INVENTORY, or the embedded inventory/local.yml."""
    chosen = Path(path or os.environ.get("EMBER_INVENTORY") or default_inventory())
    try:
        text = chosen.read_text()
    except OSError as exc:
        raise ConfigError(f"inventory {chosen}: {exc.strerror}") from None
    if chosen.suffix in (".yml", ".yaml"):
        return _from_yaml(chosen, text)
    return _from_workers_file(chosen, text)


def default_inventory() -> Path:
    return Path(__file__).resolve().parent.parent / "inventory" / "local.yml"


def _from_yaml(path: Path, text: str) -> Inventory:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    _only(path, "top level", data, {"cluster", "ssh", "defaults", "masters", "workers",
                                    "workers_file"})
    cluster = _mapping(path, "cluster", data.get("cluster", {}))
    _only(path, "cluster", cluster, CLUSTER_KEYS)
    name = str(cluster.get("name", "ember"))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{path}: cluster.name {name!r} may hold only letters, digits, . _ -")
    backend = str(cluster.get("backend", "supervisor"))
    if backend not in ("supervisor", "plain", "systemd"):
        raise ConfigError(f"{path}: cluster.backend {backend!r} is not supervisor, plain or "
                          f"systemd")
    secret = Path(str(cluster.get("secret_file", f"~/.ember/secrets/{name}.secret")))
    secret = _local_path(path, secret)

    defaults = _vars(path, "defaults", data.get("defaults", {}))
    groups: dict[str, dict[str, Any]] = {}
    masters = _group(path, "masters", data.get("masters"), groups)
    if "workers_file" in data:
        if "workers" in data:
            raise ConfigError(f"{path}: give either workers or workers_file, not both")
        workers_path = path.parent / str(data["workers_file"])
        try:
            lines = workers_path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: workers_file {workers_path}: {exc.strerror}") from None
        workers = tuple(HostEntry(a, "workers", {}) for a in _parse_workers(workers_path, lines))
    else:
        workers = _group(path, "workers", data.get("workers", []), groups)
    inventory = Inventory(path, name, backend, secret, _ssh(path, data.get("ssh", {})),
                          defaults, groups, masters, workers)
    _validate(inventory)
    return inventory


def _from_workers_file(path: Path, text: str) -> Inventory:
    """Spark's conf/workers: the master runs here and binds $EMBER_MASTER_HOST, else this
    machine's FQDN, as start-master.sh does. SSH settings come from EMBER_SSH_USER,
    EMBER_SSH_KEY_FILE and EMBER_SSH_KNOWN_HOSTS; EMBER_HOME (absolute) is every host's home."""
    import socket

    workers = tuple(HostEntry(a, "workers", {}) for a in _parse_workers(path, text))
    bind = os.environ.get("EMBER_MASTER_HOST") or socket.getfqdn()
    master = HostEntry("localhost", "masters", {"bind_host": bind})
    env = os.environ
    key_file = Path(env["EMBER_SSH_KEY_FILE"]).expanduser() if env.get("EMBER_SSH_KEY_FILE") \
        else None
    ssh = SSHSettings(user=env.get("EMBER_SSH_USER") or None, key_file=key_file,
                      known_hosts=Path(env.get("EMBER_SSH_KNOWN_HOSTS")
                                       or "~/.ssh/known_hosts").expanduser())
    defaults = {"ember_home": env["EMBER_HOME"]} if env.get("EMBER_HOME") else {}
    inventory = Inventory(path, "ember", "supervisor",
                          Path("~/.ember/secrets/ember.secret").expanduser(), ssh, defaults,
                          {}, (master,), workers)
    # This machine's name often resolves to loopback (Debian: 127.0.1.1), so resolve it.
    _validate(inventory, resolve=True)
    return inventory


def _check_reachable(inventory: Inventory, resolve: bool) -> None:
    """Workers on other hosts can never reach a master bound to loopback: refuse at load."""
    remote = next((w for w in inventory.workers if not w.local), None)
    if remote is None:
        return
    for master in inventory.masters:
        bind = inventory.advertised(master)
        if _loopback(bind, resolve):
            hint = ("set EMBER_MASTER_HOST to an address the workers can reach" if resolve else
                    "give the master an address the workers can reach (its host, or bind_host)")
            raise ConfigError(f"{inventory.path}: the master on {master.address} would bind "
                              f"{bind}, a loopback address, so worker {remote.address} (another "
                              f"host) could never reach it: {hint}")


def _loopback(address: str, resolve: bool) -> bool:
    """Whether ``address`` is loopback only; a name is looked up only when ``resolve``."""
    import ipaddress
    import socket

    if address in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        pass
    if not resolve:
        return False
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(address, None)}
    except OSError:
        return False  # binding will say so, with the name
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def _parse_workers(path: Path, text: str) -> list[str]:
    """``#`` comments, blank lines, whitespace-separated tokens, ``user@host`` allowed."""
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        for token in line.split("#", 1)[0].split():
            if not _HOST.fullmatch(token):
                raise ConfigError(f"{path} line {number}: {token!r} is not a host or user@host")
            hosts.append(token)
    if not hosts:
        raise ConfigError(f"{path}: no hosts in the workers file")
    return hosts


def _only(path: Path, where: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} in {where} "
                          f"(known: {', '.join(sorted(allowed))})")


def _mapping(path: Path, where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where} must be a mapping, not {type(value).__name__}")
    return value


def _vars(path: Path, where: str, value: Any) -> dict[str, Any]:
    data = _mapping(path, where, value)
    _only(path, where, data, HOST_KEYS)
    for key, item in data.items():
        where_key = f"{where}.{key}"
        if key in _INT_KEYS and (not isinstance(item, int) or isinstance(item, bool)):
            raise ConfigError(f"{path}: {where_key} must be a whole number, not {item!r}")
        if key in _RANGES and not _RANGES[key][0] <= item <= _RANGES[key][1]:
            low, high = _RANGES[key]
            raise ConfigError(f"{path}: {where_key} must be from {low} to {high}, not {item}")
        if key in _STR_KEYS and (not isinstance(item, str) or not item
                                 or "\n" in item or "\0" in item):
            raise ConfigError(f"{path}: {where_key} must be a one-line text, not {item!r}")
        if key == "memory":
            from toolkit.runtime.config import parse_memory_mb

            try:
                parse_memory_mb(str(item))
            except ConfigError as exc:
                raise ConfigError(f"{path}: {where_key}: {exc}") from None
        if key in ("stop_timeout", "worker_timeout", "restart_sec", "cleanup_ttl") and not (
                isinstance(item, (int, float)) and not isinstance(item, bool) and item > 0):
            raise ConfigError(f"{path}: {where_key} must be a number above 0, not {item!r}")
        if key in ("watchdog_sec", "cleanup_interval") and not (
                isinstance(item, (int, float)) and not isinstance(item, bool) and item >= 0):
            raise ConfigError(f"{path}: {where_key} must be a number of seconds (0: off), "
                              f"not {item!r}")
        if key in _CHOICES and item not in _CHOICES[key]:
            raise ConfigError(f"{path}: {where_key} must be {' or '.join(_CHOICES[key])}, "
                              f"not {item!r}")
        if key in _NAME_KEYS and not (isinstance(item, str) and _USER.fullmatch(item)):
            raise ConfigError(f"{path}: {where_key} must be a user or group name, not {item!r}")
    return data


def _group(path: Path, group: str, value: Any, groups: dict[str, dict[str, Any]]
           ) -> tuple[HostEntry, ...]:
    if value is None:
        value = []
    if isinstance(value, dict):
        _only(path, group, value, {"vars", "hosts"})
        groups[group] = _vars(path, f"{group}.vars", value.get("vars", {}))
        value = value.get("hosts", [])
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {group} must be a list of hosts or a mapping with hosts")
    entries = []
    for n, item in enumerate(value):
        if isinstance(item, str):
            item = {"host": item}
        if not isinstance(item, dict) or "host" not in item:
            raise ConfigError(f"{path}: {group}[{n}] must be a host name or a mapping with host")
        address = str(item["host"])
        if not _HOST.fullmatch(address):
            raise ConfigError(f"{path}: {group}[{n}]: {address!r} is not a host or user@host")
        rest = {k: v for k, v in item.items() if k != "host"}
        entries.append(HostEntry(address, group, _vars(path, f"{group} host {address}", rest)))
    return tuple(entries)


def _ssh(path: Path, value: Any) -> SSHSettings:
    data = _mapping(path, "ssh", value)
    _only(path, "ssh", data, SSH_KEYS)
    policy = str(data.get("host_key_policy", "reject"))
    if policy not in ("reject", "accept-new"):
        raise ConfigError(f"{path}: ssh.host_key_policy {policy!r} is not reject or accept-new")
    key_file = None
    if data.get("key_file"):
        key_file = _local_path(path, data["key_file"])
        if not os.access(key_file, os.R_OK):
            raise ConfigError(f"{path}: ssh.key_file {key_file} cannot be read")
    port = data.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{path}: ssh.port must be a port number, not {port!r}")
    timeout = data.get("connect_timeout", 10)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"{path}: ssh.connect_timeout must be a number above 0")
    for key in ("user", "jump_host"):
        if key in data and not (isinstance(data[key], str) and _HOST.fullmatch(data[key])):
            raise ConfigError(f"{path}: ssh.{key} {data[key]!r} is not a user or host name")
    return SSHSettings(
        user=data.get("user"), port=port, key_file=key_file,
        known_hosts=_local_path(path, data.get("known_hosts", "~/.ssh/known_hosts")),
        host_key_policy=policy, connect_timeout=float(timeout), jump_host=data.get("jump_host"))


def _local_path(path: Path, value: Any) -> Path:
    result = Path(str(value)).expanduser()
    return Path(os.path.normpath(result if result.is_absolute()
                                 else path.parent.absolute() / result))


def _validate(inventory: Inventory, resolve: bool = False) -> None:
    path = inventory.path
    if not inventory.masters:
        raise ConfigError(f"{path}: no masters: name at least one host under masters")
    _check_reachable(inventory, resolve)
    for group in (inventory.masters, inventory.workers):
        names = [h.address.rpartition("@")[2] for h in group]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"{path}: host {twice[0]} is listed twice under "
                              f"{group[0].group}; give it one entry (use instances for more "
                              f"workers on one host)")
    seen: dict[tuple[str, int], str] = {}
    for host in inventory.hosts:
        ports = ([(key, inventory.setting(host, key)) for key in ("port", "webui_port", "rest_port")
                  if inventory.setting(host, key) is not None]
                 if host.group == "masters" else
                 [("worker_webui_port", inventory.setting(host, "worker_webui_port") + i)
                  for i in range(int(inventory.setting(host, "instances")))])
        for key, port in ports:
            where = (inventory.advertised(host), int(port))
            if where in seen:
                raise ConfigError(f"{path}: host {host.address} {host.group} {key} {port} "
                                  f"clashes with {seen[where]} on the same address")
            seen[where] = f"{host.address} {host.group} {key}"
        inventory.home(host)  # absolute-path check for remote hosts
        if int(inventory.setting(host, "instances")) < 1:
            raise ConfigError(f"{path}: host {host.address}: instances must be at least 1")
