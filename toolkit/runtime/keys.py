"""What a process proves and accepts on its connections: cluster secrets, a job's scoped
credential, and TLS.

- **Cluster secrets.** The first proves; every one is accepted. A secret file holds one secret
  per line: during a rotation (`fab rotate-credentials`) it holds the new one and the old one.
- **Scoped credentials.** A job never gets the cluster secret. Its worker hands it a key
  derived from the secret and a scope (``driver:<id>``): the job proves that key, and the
  master, which derives the same key, knows the connection speaks for that driver and for
  nothing else.
- **TLS.** A host's certificate and key, signed by the cluster's CA, and the CA bundle that
  verifies peers. Contexts are built once per Keys; a reload builds new Keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError

_SCOPE_LABEL = b"ember-scope|"


def scoped_key(secret: bytes, scope: str) -> bytes:
    """The key a job holding ``scope`` proves, derived from the cluster secret."""
    return hmac.new(secret, _SCOPE_LABEL + scope.encode(), hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A name for a key that reveals nothing of it: which key a connection proved, so that a
    reload that retires the key can drop the connections that proved it."""
    return hashlib.sha256(b"ember-key-id|" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Tls:
    """A host's TLS material: its certificate chain and key (None for a client that only
    verifies, such as a job), and the CA bundle that verifies peers."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @cached_property
    def server(self) -> ssl.SSLContext:
        """Server side: present the host certificate, ask for the peer's (optional: clients
        such as `ember submit` and jobs authenticate by the handshake instead)."""
        if self.cert is None or self.key is None:
            raise ConfigError("a TLS server needs a certificate and a key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._load(context)
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    @cached_property
    def web(self) -> ssl.SSLContext:
        """HTTPS (web UI, REST): the host certificate, and no client certificate asked for
        (a browser would offer the user a choice of certificates)."""
        if self.cert is None or self.key is None:
            raise ConfigError("an HTTPS server needs a certificate and a key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._load(context)
        return context

    @cached_property
    def client(self) -> ssl.SSLContext:
        """Client side: verify the server against the CA and the name dialled; present the
        host certificate when there is one."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._load(context)
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_verify_locations(cafile=str(self.ca))
            if self.cert is not None and self.key is not None:
                context.load_cert_chain(str(self.cert), str(self.key))
        except FileNotFoundError as exc:
            raise ConfigError(f"TLS file {exc.filename}: no such file") from None
        except ssl.SSLError as exc:
            raise ConfigError(f"TLS files {self.cert}, {self.key}, {self.ca}: "
                              f"{exc.reason or exc}") from None

    @cached_property
    def authorities(self) -> frozenset[Any]:
        """The subjects of the CAs trusted (peer certificates' issuers are compared with them)."""
        return frozenset(_frozen(ca["subject"]) for ca in self.client.get_ca_certs())

    def check(self) -> None:
        """Build the contexts now, so bad files fail at start-up with their names."""
        if self.cert is not None:
            _check_private(self.key, "TLS key")
            _ = self.server, self.web
        _ = self.client


@dataclass(frozen=True)
class Keys:
    """Everything a process authenticates with. ``Keys()`` is a cluster without a secret."""

    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    scope: str | None = None
    """A job's scope; its one secret is then the scoped key, not a cluster secret."""
    tls: Tls | None = None
    fallback: Path | None = None
    """A client's: the user's own secret file, proved when a role asks for a secret and none
    was given (user_secret_file)."""

    @property
    def secret(self) -> bytes | None:
        """The secret this process proves with (None: no authentication)."""
        return self.secrets[0] if self.secrets else None

    def fallback_secret(self) -> bytes | None:
        """The user's own secret, when this client has none and that file exists."""
        if self.secrets or self.fallback is None or not self.fallback.exists():
            return None
        return read_secrets(self.fallback)[0]

    @property
    def scheme(self) -> str:
        """Of this process's web UI and REST URLs."""
        return "https" if self.tls is not None and self.tls.cert is not None else "http"

    @property
    def web(self) -> ssl.SSLContext | None:
        return self.tls.web if self.tls is not None and self.tls.cert is not None else None

    def accepted(self, scope: str | None) -> list[bytes]:
        """The keys a peer claiming ``scope`` may prove (the cluster secrets for none)."""
        if not scope:
            return list(self.secrets)
        return [scoped_key(s, scope) for s in self.secrets]

    def for_job(self, scope: str) -> dict[str, Any]:
        """A job's credential file content: its scope and its derived key."""
        if self.secret is None:
            raise ConfigError("no cluster secret to derive a job credential from")
        return {"scope": scope, "key": base64.b64encode(scoped_key(self.secret, scope)).decode()}


def _frozen(name: Any) -> Any:
    return tuple(tuple(tuple(pair) for pair in rdn) for rdn in name)


def peer_identity(cert: Any) -> tuple[frozenset[str], Any]:
    """The names and addresses of a verified peer certificate (``getpeercert()``), and its
    issuer."""
    if not cert:
        return frozenset(), None
    hosts = frozenset(value for kind, value in cert.get("subjectAltName", ())
                      if kind in ("DNS", "IP Address"))
    return hosts, _frozen(cert.get("issuer", ()))


def read_secrets(path: str | Path) -> tuple[bytes, ...]:
    """Read the cluster secrets, one per line (several while a rotation runs). The file must be
    private to its owner (mode 0600 or 0400)."""
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
    if info.st_uid != os.geteuid() and os.geteuid() != 0:  # root may use the run user's
        raise ConfigError(f"secret file {path} belongs to uid {info.st_uid}, not to this user")
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise ConfigError(f"secret file {path}: {exc.strerror}") from None
    found = tuple(line.strip() for line in lines if line.strip())
    if not found:
        found = (b"",)
    for number, secret in enumerate(found, 1):
        if len(secret) < 16:
            where = f" (line {number})" if len(found) > 1 else ""
            raise ConfigError(f"secret file {path}{where} holds {len(secret)} bytes; use at least "
                              f"16 (for example: head -c 32 /dev/urandom | base64 > {path})")
    return found


def user_secret_file(env: Mapping[str, str] | None = None) -> Path:
    """This user's own secret: ``$EMBER_HOME/secret``, by default ``~/.ember/secret``. Roles
    on loopback given no secret make it (0600) and use it; clients given none prove it when
    a role asks for a secret."""
    env = os.environ if env is None else env
    home = env.get("EMBER_HOME") or os.path.expanduser("~/.ember")
    return Path(home) / "secret"


def make_user_secret(path: Path) -> tuple[bytes, bool]:
    """The user's own secret, made (mode 0600, in a 0700 directory) when missing; whether it
    was made now."""
    made = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another role made it meanwhile
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64encode(secrets.token_bytes(32)) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            made = True
    return read_secrets(path)[0], made


def as_keys(keys: Keys | bytes | None) -> Keys:
    """Keys from a bare secret (or none), for callers that only have one."""
    if isinstance(keys, Keys):
        return keys
    return Keys((keys,)) if keys else Keys()


def _check_private(path: Path | None, what: str) -> None:
    if path is None:
        return
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                          f"make it private: chmod 600 {path}")


def read_credential_file(path: str | Path) -> Keys:
    """A job's credential (``EMBER_CREDENTIAL_FILE``): JSON with its scope and key."""
    path = Path(path)
    _check_private(path, "credential file")
    try:
        data = json.loads(path.read_text())
        key = base64.b64decode(data["key"], validate=True)
        scope = str(data["scope"])
    except OSError as exc:
        raise ConfigError(f"credential file {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"credential file {path}: not an Ember job credential "
                          f"(JSON with scope and key)") from None
    return Keys((key,), scope=scope)
