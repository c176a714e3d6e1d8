"""The cluster's credentials on the control machine: its secret, its CA, each host's TLS files.

The secret is the inventory's ``cluster.secret_file``; the TLS material is in a directory
beside it (``<secret_file>.tls``, 0700): the CA (``ca.pem``, ``ca-key.pem``), the bundle hosts
trust (``trusted.pem``: the CA, and the next one while a rotation runs) and each host's key
and certificate (``hosts/<host>/``). Everything is made on first use and kept; a host's
certificate is reissued when it nears its end, names other addresses or the CA changed
(certs.py). Hosts get their files in the bundle `ember daemon` reads on stdin, never on a
command line.
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
import threading
from pathlib import Path

from toolkit.errors import ConfigError
from toolkit.inventory import Inventory
from toolkit.ops.certs import Authority, needs_reissue
from toolkit.ops.group import Events

TLS_DIR = "conf/tls"
"""A host's TLS directory, under its ember_home (EMBER_TLS_DIR)."""


def new_secret() -> bytes:
    return base64.b64encode(secrets.token_bytes(32)) + b"\n"


def write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (its directory made 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Credentials:
    def __init__(self, inventory: Inventory, events: Events) -> None:
        self.inventory = inventory
        self.events = events
        self.directory = Path(f"{inventory.secret_file}.tls")
        self._authority: Authority | None = None
        self._lock = threading.RLock()  # hosts are served from several threads at once

    # The secret --------------------------------------------------------------------------

    def secret(self) -> bytes:
        """The secret file's content (one secret; two while a rotation runs): generated
        (mode 0600) on first use, then reused."""
        with self._lock:
            return self._secret()

    def _secret(self) -> bytes:
        path = self.inventory.secret_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(new_secret())
            self.events.note(f"generated the cluster secret in {path} (mode 0600)")
        from toolkit.runtime.config import read_secrets

        read_secrets(path)  # same checks as the daemons apply
        return path.read_bytes()

    # TLS ---------------------------------------------------------------------------------

    def authority(self) -> Authority:
        """The cluster CA: made on first use."""
        with self._lock:
            return self._load_authority()

    def _load_authority(self) -> Authority:
        if self._authority is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.directory / ".lock", "a") as lock:  # another fab run may make it
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._authority = self._made_or_loaded()
        return self._authority

    def _made_or_loaded(self) -> Authority:
        if (self.directory / "ca-key.pem").exists():
            return Authority.load(self.directory)
        made = Authority.create(self.inventory.name)
        made.save(self.directory)
        # a bundle of an earlier CA (its key lost) would have hosts trust none of the
        # certificates this one issues
        (self.directory / "trusted.pem").unlink(missing_ok=True)
        self.events.note(f"made the cluster CA in {self.directory} (its key: mode 0600)")
        return made

    def trusted(self) -> bytes:
        """The CA bundle hosts verify their peers with."""
        bundle = self.directory / "trusted.pem"
        return bundle.read_bytes() if bundle.exists() else self.authority().pem

    def set_trusted(self, pems: list[bytes]) -> None:
        write_private(self.directory / "trusted.pem", b"".join(pems))
        os.chmod(self.directory / "trusted.pem", 0o644)

    def host(self, name: str, names: list[str]) -> tuple[bytes, bytes]:
        """A host's certificate and key, reissued when needed (certs.needs_reissue)."""
        with self._lock:
            return self._host(name, names)

    def _host(self, name: str, names: list[str]) -> tuple[bytes, bytes]:
        authority = self.authority()
        folder = self.directory / "hosts" / name.replace("/", "_")
        cert_path, key_path = folder / "cert.pem", folder / "key.pem"
        why = "it has none" if not (cert_path.exists() and key_path.exists()) else (
            needs_reissue(cert_path.read_bytes(), names, authority, key_path.read_bytes()))
        if why is not None:
            issued = authority.issue(names)
            write_private(key_path, issued.key)
            write_private(cert_path, issued.cert)
            if why != "it has none":
                self.events.note(f"reissued the TLS certificate of {name}: {why}")
        try:
            return cert_path.read_bytes(), key_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"TLS files of {name} in {folder}: {exc.strerror}") from None

    def files(self, home: str, name: str, names: list[str]) -> list[tuple[str, bytes, int]]:
        """The TLS files of one host, as (path on the host, content, mode)."""
        cert, key = self.host(name, names)
        return [(f"{home}/{TLS_DIR}/ca.pem", self.trusted(), 0o644),
                (f"{home}/{TLS_DIR}/cert.pem", cert, 0o644),
                (f"{home}/{TLS_DIR}/key.pem", key, 0o600)]
