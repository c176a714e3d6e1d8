"""What the playbook and a host's `ember daemon` say to each other, in one place.

The playbook runs one `ember daemon ACTION ROLE 1,2 --json` per host and role. On its standard
input travel, in order: the host's files (one bundle line, with --files-from-stdin; see
toolkit/base/files.py), then, with --when-told, one order line. On its standard output comes one
report line (JSON) per instance. Both sides import this module; nothing else spells these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import ConfigError

GO = "go"
SKIP = "skip"


@dataclass(frozen=True)
class Order:
    """`go [SECONDS]`: carry on, within SECONDS if given. `skip REASON`: do nothing, say why.
    No line at all (the caller went away) is a skip too."""

    go: bool
    seconds: float | None = None
    reason: str = ""

    def line(self) -> bytes:
        if not self.go:
            return f"{SKIP} {self.reason}\n".encode()
        return (f"{GO} {self.seconds:.1f}\n" if self.seconds is not None else f"{GO}\n").encode()


def read_order(line: str) -> Order:
    word, _, rest = line.strip().partition(" ")
    if word == GO:
        try:
            return Order(True, float(rest) if rest else None)
        except ValueError:
            raise ConfigError(f"--when-told: '{GO}' takes seconds, not {rest!r}") from None
    if word == SKIP:
        return Order(False, reason=rest.strip())
    return Order(False, reason="nobody said to go ahead")


@dataclass(frozen=True)
class Report:
    """How one instance's action ended: its exit code and what it said."""

    role: str
    instance: int
    code: int
    lines: list[str] = field(default_factory=list)

    def line(self) -> str:
        return json.dumps({"role": self.role, "instance": self.instance, "code": self.code,
                           "lines": self.lines})


def read_reports(text: str, role: str) -> dict[int, Report]:
    """The reports about ``role`` in a command's output; other lines are ignored."""
    found: dict[int, Report] = {}
    for line in text.splitlines():
        try:
            data: Any = json.loads(line)
            if data["role"] == role:
                found[int(data["instance"])] = Report(
                    role, int(data["instance"]), int(data["code"]),
                    [str(x) for x in data["lines"]])
        except (ValueError, TypeError, KeyError):
            continue
    return found


def read_statuses(text: str) -> dict[int, dict[str, Any]]:
    """`ember daemon status ROLE 1,2 --json`: one status object per instance, by instance.
    Raises ValueError when the output is not that."""
    found = {}
    for line in text.strip().splitlines():
        if not line.startswith("{"):  # a login shell's rc files may say something first
            continue
        info = json.loads(line)
        if not isinstance(info, dict) or "instance" not in info:
            raise ValueError(f"not a status: {line[:80]!r}")
        found[int(info["instance"])] = info
    if text.strip() and not found:
        raise ValueError(f"no status in: {text.strip()[:80]!r}")
    return found
