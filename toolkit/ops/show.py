"""Everything the playbook prints, in one place: outcomes as they come, notes, the summary
line and the status table. Operations never print; they tell an Events sink (group.py)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from toolkit.ops.group import Outcome


def outcome_lines(outcome: Outcome) -> list[str]:
    """``host: role N: message``; a message's further lines aligned under its first."""
    what = f"{outcome.role} {outcome.instance}" if outcome.instance else outcome.role
    return [f"{outcome.host}: {what if n == 0 else ' ' * len(what)}{':' if n == 0 else ' '} "
            f"{line}" for n, line in enumerate(outcome.message.splitlines() or [""])]


def summary(task: str, outcomes: list[Outcome]) -> tuple[int, str]:
    """The exit code and the last line of a task."""
    failed = [o for o in outcomes if not o.ok]
    total = len(outcomes)
    if failed:
        hosts = ", ".join(sorted({o.host for o in failed}))
        return 1, f"{task}: {total - len(failed)} of {total} succeeded; failed on {hosts}"
    return 0, f"{task}: all {total} succeeded"


class Printer:
    """Events printed as whole lines, whichever thread sends them."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or (lambda line: print(line, file=sys.stdout, flush=True))
        self._lock = threading.Lock()

    def outcome(self, outcome: Outcome) -> None:
        with self._lock:
            for line in outcome_lines(outcome):
                self._write(line)

    def note(self, text: str) -> None:
        with self._lock:
            self._write(text)


def format_status(rows: list[dict[str, Any]]) -> str:
    """`fab status`'s table, then each row's error or note."""
    from toolkit.base.procs import format_uptime

    header = ["HOST", "ROLE", "INST", "DAEMON", "PID", "UPTIME", "MASTER VIEW", "CORES", "MEMORY"]
    lines = [header]
    for row in rows:
        lines.append([row["host"], row["role"], str(row["instance"]), row["daemon"],
                      str(row["pid"] or "-"),
                      format_uptime(row["uptime"]) if row["uptime"] is not None else "-",
                      row["master_view"], row["cores"] or "-", row["memory"] or "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
    masters = [r for r in rows if r["role"] == "master"]
    leaders = [r["host"] for r in masters if r["master_view"] == "ALIVE"]
    leading = ([f"leader: {', '.join(leaders) if leaders else 'none (no master is ALIVE)'}"]
               if len(masters) > 1 else [])
    uis = [f"{r['host']}: master {r['instance']} web UI at {r['ui']}" for r in masters
           if r.get("ui")]
    errors = [f"{r['host']}: {r['error']}" for r in rows if r.get("error")]
    notes = [f"{r['host']}: {r['role']} {r['instance']}: {r['detail']}" for r in rows
             if r.get("detail") and not r.get("ok") and not r.get("error")]
    return "\n".join([text, *leading, *uis, *errors, *notes])
