"""Parsing and checking of runtime settings: memory strings, master URLs, secrets, addresses."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import ConfigError
from toolkit.runtime.keys import (
    Keys,
    Tls,
    read_credential_file,
    read_secrets,
    user_secret_file,
)
from toolkit.settings import default_home, default_of, named, parse_memory_mb, resolve

__all__ = ["parse_memory_mb", "read_secrets"]  # its home is toolkit/settings; kept importable here


def default_cores() -> int:
    return len(os.sched_getaffinity(0)) or 1


def default_memory_mb() -> int:
    """Total RAM minus 1 GiB, at least 1 GiB (Spark's rule)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    return max(total - 1024, 1024)


def parse_master_url(url: str) -> list[tuple[str, int]]:
    """``ember://h1:p1[,h2:p2...]`` -> [(host, port), ...]."""
    prefix = "ember://"
    if not url.startswith(prefix):
        raise ConfigError(f"master URL {url!r} must look like ember://host:port[,host:port...]")
    addresses = []
    for part in url[len(prefix):].split(","):
        host, sep, port = part.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"master URL {url!r}: {part!r} is not host:port")
        addresses.append((host, int(port)))
    return addresses


def read_secret_file(path: str | Path) -> bytes:
    """Read the cluster secret (the first, when the file holds several)."""
    return read_secrets(path)[0]


def read_tls_dir(path: str | Path) -> Tls:
    """A TLS directory: ``ca.pem``, and a host's ``cert.pem`` and ``key.pem`` (a client that
    only verifies, such as a job, has the CA alone)."""
    path = Path(path)
    try:
        if not (path / "ca.pem").is_file():
            raise ConfigError(f"TLS directory {path}: no ca.pem (the cluster CA) in it")
        cert, key = path / "cert.pem", path / "key.pem"
        tls = Tls(path / "ca.pem", cert, key) if cert.exists() else Tls(path / "ca.pem")
    except PermissionError:
        raise ConfigError(f"TLS directory {path}: not readable by this user "
                          f"(uid {os.geteuid()})") from None
    tls.check()
    return tls


def load_keys(secret_file: str | Path | None, tls_dir: str | Path | None) -> Keys:
    """A process's keys from its settings (both optional)."""
    return Keys(read_secrets(secret_file) if secret_file else (),
                tls=read_tls_dir(tls_dir) if tls_dir else None)


def keys_from_env(env: Mapping[str, str] | None = None) -> Keys:
    """A client's keys from its environment: ``EMBER_SECRET_FILE`` (an operator's), else
    ``EMBER_CREDENTIAL_FILE`` (a job's, which its worker writes), and ``EMBER_TLS_DIR``."""
    env = os.environ if env is None else env
    tls = read_tls_dir(env["EMBER_TLS_DIR"]) if env.get("EMBER_TLS_DIR") else None
    if env.get("EMBER_SECRET_FILE"):
        return Keys(read_secrets(env["EMBER_SECRET_FILE"]), tls=tls)
    if env.get("EMBER_CREDENTIAL_FILE"):
        return dataclasses.replace(read_credential_file(env["EMBER_CREDENTIAL_FILE"]), tls=tls)
    return Keys(tls=tls, fallback=user_secret_file(env))


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                   for a in addresses)


def check_exposure(role: str, host: str, keys: Keys, insecure: bool) -> None:
    """Refuse to listen beyond loopback without a secret and TLS unless the operator said
    --insecure."""
    if insecure or is_loopback(host):
        return
    if keys.secret is None:
        raise ConfigError(
            f"{role} would listen on {host}, which is reachable from other machines, with no "
            f"cluster secret: pass --secret-file FILE (or set EMBER_SECRET_FILE), or --insecure "
            f"to accept unauthenticated connections")
    if keys.tls is None:
        raise ConfigError(
            f"{role} would listen on {host}, which is reachable from other machines, without "
            f"TLS: pass --tls-dir DIR (or set EMBER_TLS_DIR; the playbook makes one), or "
            f"--insecure to send the cluster's traffic in the clear")


def default_host() -> str:
    """The machine's fully qualified name, like Spark's `hostname -f`."""
    return socket.getfqdn()


def ember_home() -> Path:
    """$EMBER_HOME, else the default home."""
    return Path(resolve(named("daemon", "home"), None, os.environ, default_home))


@dataclass(frozen=True)
class MasterConfig:
    host: str
    port: int = default_of("master", "port")
    webui_port: int = default_of("master", "webui_port")
    worker_timeout: float = default_of("master", "worker_timeout")
    keys: Keys = field(default_factory=Keys, repr=False)
    spread_out: bool = True
    """Spread an application's executors over as many workers as possible (Spark's default);
    False fills one worker before the next."""
    max_executor_retries: int = 10
    rest_port: int | None = None
    max_connections: int | None = None
    """None: sized from the open-file limit (endpoint.Limits.sized)."""
    max_handshakes: int | None = None
    max_handshakes_per_host: int = default_of("master", "max_handshakes_per_host")
    recovery_mode: str = default_of("master", "recovery_mode")
    recovery_dir: Path | None = None
    zookeeper_url: str | None = None
    zookeeper_dir: str = default_of("master", "zookeeper_dir")

    @property
    def heartbeat_interval(self) -> float:
        return self.worker_timeout / 4
