"""The plain backend: a detached, niced process with its output appended to the log."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from toolkit.base.files import open_private
from toolkit.base.procs import Stopped, terminate
from toolkit.daemon.settings import DaemonSettings


class PlainBackend:
    name = "plain"
    confirms_ready = False

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings

    def prepare(self) -> None:
        """Nothing to get ready ahead of a launch."""

    def launch(self, role: str, instance: int, command: list[str], env: Mapping[str, str],
               log: Path) -> Callable[[], str | None]:
        """Start the process; return a check that says why it died, or None while it lives."""
        # the log's directory is the run user's: never a file that user's link leads to
        with os.fdopen(open_private(log, os.O_WRONLY | os.O_APPEND, 0o644), "ab") as out:
            user = self.settings.user  # as root: the run user (settings.py), never root
            base = dict(os.environ)
            if user is not None:  # root's own variables are not the run user's
                base = {**{k: v for k, v in base.items() if not k.startswith(("SUDO_", "SSH_"))},
                        "HOME": str(self.settings.home), "USER": user, "LOGNAME": user}
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**base, **env}, cwd=self.settings.home,
                                    user=user, group=self.settings.group,
                                    extra_groups=[] if user else None)

        def failure() -> str | None:
            code = proc.poll()
            return None if code is None else f"it exited with code {code}"
        return failure

    def stop(self, role: str, instance: int, pid: int | None) -> Stopped:
        """SIGTERM, wait EMBER_STOP_TIMEOUT, then SIGKILL the group (of this very process:
        a pid taken by another meanwhile is left alone)."""
        return Stopped.GONE if pid is None else terminate(pid, self.settings.stop_timeout)

    def program(self, role: str, instance: int) -> tuple[str | None, bool]:
        return None, False
