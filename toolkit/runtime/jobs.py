"""What a worker hands the jobs it runs: their environment and their credential.

A job gets the worker's environment without its EMBER_* settings, the user's variables, then
Ember's. It never gets the cluster secret or the host's TLS key: a driver gets a credential
scoped to its own work (keys.py, master/scopes.py) in a file of its work dir (mode 0600,
removed when it ends), and, with TLS, a directory holding only the cluster CA. Executors get
no credential: they talk to their application's driver, which is the application's business.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cached_property
from pathlib import Path

from toolkit.base.files import write_atomic
from toolkit.runtime.keys import Keys

logger = logging.getLogger(__name__)

CREDENTIAL = ".ember-credential"
"""A driver's credential file, in its work dir."""
CA_DIR = ".ember-tls"
"""In the work dir: the cluster CA that jobs verify the master with."""


class JobEnv:
    def __init__(self, work_dir: Path, master_url: str, keys: Keys) -> None:
        self.work_dir = work_dir
        self.master_url = master_url
        self.keys = keys
        self._ca_copied = False

    @cached_property
    def _base(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}

    def env(self, user: dict[str, str], ours: dict[str, str]) -> dict[str, str]:
        """The worker's environment without its own EMBER_* settings, then the user's
        variables, then Ember's (which win)."""
        cluster = {"EMBER_MASTER_URL": self.master_url}
        if self.keys.tls is not None:
            cluster["EMBER_TLS_DIR"] = str(self._ca_dir().absolute())
        return {**self._base, **user, **cluster, **ours}

    def driver_env(self, driver_id: str, user: dict[str, str],
                   ours: dict[str, str]) -> dict[str, str]:
        """A driver's environment, with its credential when the cluster has a secret."""
        env = self.env(user, ours)
        if self.keys.secret is not None:
            env["EMBER_CREDENTIAL_FILE"] = str(self._write_credential(driver_id).absolute())
        return env

    def ended(self, driver_id: str) -> None:
        """A driver ended: its credential goes (the master no longer honours it anyway)."""
        (self.work_dir / driver_id / CREDENTIAL).unlink(missing_ok=True)

    def reload(self, keys: Keys, running: list[str]) -> None:
        """New keys (a rotation): running drivers' credentials and the CA are rewritten, now:
        a running job reads them again to reconnect (client.py)."""
        self.keys = keys
        self._ca_copied = False
        if keys.tls is not None and (self.work_dir / CA_DIR).exists():
            try:
                self._ca_dir()
            except OSError as exc:  # the next launch copies it again
                logger.warning("Cannot copy the cluster CA for the jobs into %s: %s",
                               self.work_dir / CA_DIR, exc)
        for driver_id in running:
            if (self.work_dir / driver_id / CREDENTIAL).exists() and keys.secret is not None:
                self._write_credential(driver_id)

    def _write_credential(self, driver_id: str) -> Path:
        directory = self.work_dir / driver_id
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / CREDENTIAL
        write_atomic(path, json.dumps(self.keys.for_job(f"driver:{driver_id}")).encode(),
                     mode=0o600)
        return path

    def _ca_dir(self) -> Path:
        directory = self.work_dir / CA_DIR
        if not self._ca_copied and self.keys.tls is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            # a temp file of its own: the workers of one host may share the work dir
            write_atomic(directory / "ca.pem", Path(self.keys.tls.ca).read_bytes(), 0o644)
            self._ca_copied = True
        return directory
