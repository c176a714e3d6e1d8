"""Parsing and checking of runtime settings: memory strings, master URLs, secrets, addresses."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import ConfigError
from toolkit.settings import default_home, default_of, named, parse_memory_mb, resolve

__all__ = ["parse_memory_mb"]  # its home is toolkit/settings; kept importable here


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
    """Read the cluster secret. The file must be private to its owner (mode 0600 or 0400)."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"secret file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"secret file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(f"secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                          f"it must not be readable by group or others (chmod 600 {path})")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"secret file {path} belongs to uid {info.st_uid}, not to this user")
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"secret file {path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise ConfigError(f"secret file {path} holds {len(secret)} bytes; use at least 16 "
                          f"(for example: head -c 32 /dev/urandom | base64 > {path})")
    return secret


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                   for a in addresses)


def check_exposure(role: str, host: str, secret: bytes | None, insecure: bool) -> None:
    """Refuse to listen beyond loopback without a secret unless the operator said --insecure."""
    if secret is None and not insecure and not is_loopback(host):
        raise ConfigError(
            f"{role} would listen on {host}, which is reachable from other machines, with no "
            f"cluster secret: pass --secret-file FILE (or set EMBER_SECRET_FILE), or --insecure "
            f"to accept unauthenticated connections")


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
    secret: bytes | None = field(default=None, repr=False)
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
