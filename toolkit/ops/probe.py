"""What a host says of itself for ``fab doctor`` and ``fab deploy``; it runs on that host.

Its source is sent to the host's python (``python -c SOURCE [HOME [HOST:PORT ...]]``) and prints
one JSON object. So it imports the standard library only (and packaging, when installed, for
the lock's marker environment) and nothing of Ember: it must run where Ember is not installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import sys
from typing import Any


def installed() -> dict[str, str]:
    """Name -> version of every distribution this interpreter sees."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name] = dist.version
    return found


def environment() -> dict[str, str] | None:
    """The values environment markers are evaluated against; None without packaging."""
    try:
        from packaging.markers import default_environment
    except ImportError:
        return None
    return {key: str(value) for key, value in default_environment().items()}


def toolkit_version() -> str | None:
    try:
        import toolkit
    except ImportError:
        return None
    return str(toolkit.__version__)


def writable(home: str) -> bool:
    """Whether Ember's home exists (it is made if it can be) and can be written."""
    try:
        os.makedirs(home, exist_ok=True)
    except OSError:
        return False
    return os.access(home, os.W_OK)


def busy(specs: list[str]) -> list[str]:
    """The HOST:PORT addresses a server cannot listen on now. Like the servers, with
    SO_REUSEADDR: a port whose last connections linger in TIME_WAIT is free for them."""
    taken = []
    for spec in specs:
        host, _, port = spec.rpartition(":")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, int(port)))
            except OSError:
                taken.append(spec)
    return taken


def facts(home: str | None, ports: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {"python": sys.version.split()[0], "toolkit": toolkit_version(),
                             "installed": installed(), "environment": environment()}
    if home is not None:
        found["writable"] = writable(home)
        found["busy"] = busy(ports)
    return found


def main(argv: list[str]) -> int:
    print(json.dumps(facts(argv[0] if argv else None, argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
