"""The inventory: which hosts run masters and workers, how to reach them, and their settings.

YAML (see inventory/example.yml) or a Spark-style ``workers`` file. Every per-host setting is
looked up host -> group (masters/workers ``vars``) -> ``defaults`` -> built-in, in ``setting()``.
Errors name the file and the key or host.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.ensemble_inventory import Ensemble, parse_ensemble
from toolkit.errors import ConfigError
from toolkit.settings import BACKENDS, HOME, REMOTE_HOME, Setting, inventory_keys, named, parsed
from toolkit.settings.parsers import one_line

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

CLUSTER_KEYS = {"name", "secret_file", "backend", "tls"}
TLS_CHOICES = ("auto", "on", "off")
"""cluster.tls: auto (the default) is on when any host is reached beyond loopback."""
SSH_KEYS = {"user", "port", "key_file", "known_hosts", "host_key_policy", "connect_timeout",
            "jump_host"}
HOST_KEYS = inventory_keys()
"""Every per-host key, with the setting (toolkit/settings) whose parser checks its values."""


def _as_written(value: Any) -> Any:
    """A default as an inventory would hold it: 10, not 10.0 (ember-env.sh shows it so)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


BUILTIN: dict[str, Any] = {key: _as_written(s.default) for key, s in HOST_KEYS.items()
                           if s.builtin}
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
    recovery: dict[str, str] = field(default_factory=dict)
    """The masters' recovery: mode, and dir for filesystem (EMBER_RECOVERY_*): empty, none."""
    ensemble: Ensemble | None = None
    """The ZooKeeper ensemble the playbook runs for the masters (recovery.ensemble)."""
    tls: str = "auto"

    @property
    def uses_tls(self) -> bool:
        """TLS between the cluster's processes: cluster.tls on, or auto and some role binds
        beyond loopback."""
        if self.tls != "auto":
            return self.tls == "on"
        return any(not _loopback(self.advertised(h), False) for h in self.hosts)

    def setting(self, host: HostEntry, key: str) -> Any:
        """host -> group -> defaults -> built-in: the one place settings are looked up."""
        for scope in (host.vars, self.group_vars.get(host.group, {}), self.defaults):
            if key in scope:
                return scope[key]
        if key == "python":
            return sys.executable if host.local else f"{self.home(host)}/venv/bin/python"
        if key == "ember_home":
            return HOME if host.local else REMOTE_HOME
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

    def entry(self, name: str) -> HostEntry | None:
        """The first entry of the host named ``name`` (its address without a user)."""
        return next((h for h in self.hosts if h.address.rpartition("@")[2] == name), None)

    def ensemble_servers(self) -> list[tuple[str, int, int]]:
        """The ensemble's servers, in order of their number: address, peer and election port."""
        if self.ensemble is None:
            return []
        found = [self.entry(name) for name in self.ensemble.hosts]
        return [(self.advertised(e), self.ensemble.peer_port, self.ensemble.election_port)
                for e in found if e is not None]

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

    class Strict(yaml.SafeLoader):  # type: ignore[misc]
        """A key written twice is an error: YAML would keep the last one silently (a second
        `workers:` list would hide the first from stop-all)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool):
                    continue  # a key YAML allows but no inventory has: the checks name it
                if key in seen:
                    raise ConfigError(f"{path}, line {key_node.start_mark.line + 1}: {key!r} "
                                      f"is given twice")
                seen.add(key)
            return super().construct_mapping(node, deep)

    try:
        data = yaml.load(text, Loader=Strict) or {}  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    _only(path, "top level", data, {"cluster", "ssh", "defaults", "masters", "workers",
                                    "workers_file", "recovery"})
    cluster = _mapping(path, "cluster", data.get("cluster", {}))
    _only(path, "cluster", cluster, CLUSTER_KEYS)
    name = str(cluster.get("name", "ember"))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{path}: cluster.name {name!r} may hold only letters, digits, . _ -")
    backend = parsed(f"{path}: cluster.backend", str(cluster.get("backend", BACKENDS[0])),
                     named("daemon", "backend").parse)
    secret = Path(str(cluster.get("secret_file", _secret_file(name))))
    secret = _local_path(path, secret)
    tls = str(cluster.get("tls", "auto")).lower()
    if cluster.get("tls") is True or cluster.get("tls") is False:  # YAML's on/off
        tls = "on" if cluster["tls"] else "off"
    if tls not in TLS_CHOICES:
        raise ConfigError(f"{path}: cluster.tls {cluster['tls']!r} must be auto, on or off")

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
    recovery, ensemble = _recovery(path, data.get("recovery", {}))
    inventory = Inventory(path, name, backend, secret, _ssh(path, data.get("ssh", {})),
                          defaults, groups, masters, workers, recovery, ensemble, tls)
    _validate(inventory)
    if ensemble is not None:
        check_ensemble(inventory, ensemble)
    return inventory


def _recovery(path: Path, value: Any) -> tuple[dict[str, str], Ensemble | None]:
    """``recovery: {mode: filesystem, dir: /shared/ember-recovery}`` (a directory every master
    sees: NFS, or one host), ``{mode: zookeeper, zookeeper: "z1:2181,z2:2181", root: /ember}``,
    or ``{mode: zookeeper, ensemble: [h1, h2, h3]}`` (the playbook runs ZooKeeper on those
    hosts). Keys are the masters' EMBER_RECOVERY_MODE, _DIR, EMBER_ZOOKEEPER_URL, _DIR."""
    data = _mapping(path, "recovery", value)
    _only(path, "recovery", data, {"mode", "dir", "zookeeper", "root", "ensemble"})
    if not data:
        return {}, None
    mode = parsed(f"{path}: recovery.mode", str(data.get("mode", "none")),
                  named("master", "recovery_mode").parse)
    found = {"mode": mode}
    if "ensemble" in data and mode != "zookeeper":
        raise ConfigError(f"{path}: recovery.ensemble runs ZooKeeper for recovery.mode "
                          f"zookeeper, not {mode}")
    if mode == "zookeeper":
        ensemble = parse_ensemble(path, data["ensemble"]) if "ensemble" in data else None
        if ensemble is not None and data.get("zookeeper"):
            raise ConfigError(f"{path}: give recovery.zookeeper (a ZooKeeper of your own) or "
                              f"recovery.ensemble (one the playbook runs), not both")
        if ensemble is None and not data.get("zookeeper"):
            raise ConfigError(f"{path}: recovery.mode zookeeper needs recovery.zookeeper "
                              f"(HOST:PORT[,HOST:PORT...]) or recovery.ensemble (hosts of "
                              f"this inventory to run ZooKeeper on)")
        for key in ("zookeeper", "root"):  # they go into ember-env.sh: one line each
            if data.get(key) or (key == "root" and key in data):
                found[key] = parsed(f"{path}: recovery.{key}", str(data[key]), one_line)
        return found, ensemble
    if "dir" in data:
        directory = parsed(f"{path}: recovery.dir", str(data["dir"]), one_line)
        if not directory.startswith("/"):
            raise ConfigError(f"{path}: recovery.dir {directory!r} must be an absolute path "
                              f"(the same one on every master host)")
        found["dir"] = directory
    elif mode == "filesystem":
        raise ConfigError(f"{path}: recovery.mode filesystem needs recovery.dir")
    return found, None


def check_ensemble(inventory: Inventory, ensemble: Ensemble) -> None:
    """Every ensemble host is a host of the inventory (the playbook reaches it as such); the
    masters are given its servers' client addresses."""
    for name in ensemble.hosts:
        if inventory.entry(name) is None:
            raise ConfigError(f"{inventory.path}: recovery.ensemble host {name} is not a host "
                              f"of the inventory: list it under masters or workers")
    inventory.recovery["zookeeper"] = ",".join(
        f"[{host}]:{ensemble.client_port}" if ":" in host else f"{host}:{ensemble.client_port}"
        for host, _, _ in inventory.ensemble_servers())


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
    inventory = Inventory(path, "ember", BACKENDS[0],
                          Path(_secret_file("ember")).expanduser(), ssh, defaults,
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
    _only(path, where, data, set(HOST_KEYS))
    return {key: _checked(path, f"{where}.{key}", HOST_KEYS[key], item)
            for key, item in data.items()}


def _checked(path: Path, where_key: str, setting: Setting, item: Any) -> Any:
    """One value, checked by its setting's parser. Kept as written (ember-env.sh shows it so),
    but a quoted number counts as the number."""
    if isinstance(item, bool) or not isinstance(item, (str, int, float)):
        raise ConfigError(f"{path}: {where_key}: {item!r} is not a text or a number")
    value = parsed(f"{path}: {where_key}", str(item), setting.key_parse or setting.parse)
    if isinstance(item, str) and isinstance(value, (int, float)):
        for number in (int, float):
            with contextlib.suppress(ValueError):
                return number(item)
    return item


def _secret_file(cluster: str) -> str:
    return f"{HOME}/secrets/{cluster}.secret"


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
                 [("worker_webui_port", int(inventory.setting(host, "worker_webui_port")) + i)
                  for i in range(int(inventory.setting(host, "instances")))])
        for key, port in ports:
            where = (inventory.advertised(host), int(port))
            if where in seen:
                raise ConfigError(f"{path}: host {host.address} {host.group} {key} {port} "
                                  f"clashes with {seen[where]} on the same address")
            seen[where] = f"{host.address} {host.group} {key}"
        inventory.home(host)  # absolute-path check for remote hosts
