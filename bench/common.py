"""Helpers shared by the benchmarks: ports, polling, tables."""

from __future__ import annotations

import json
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL = 0.005


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(check: Callable[[], Any], limit: float, what: str) -> float:
    """Poll ``check`` until truthy; return the monotonic time it first was."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except (OSError, ValueError):
            pass
        time.sleep(POLL)
    raise TimeoutError(f"{what} did not happen within {limit} s")


def accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


def get_json(port: int) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1) as response:
        return json.load(response)


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def fmt(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values)}


def print_table(header: list[str], lines: list[list[str]]) -> None:
    rows = [header, *lines]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def compare(results: dict[str, list[dict[str, float]]], targets: dict[str, float],
            judged: list[str]) -> tuple[dict[str, Any], list[str], list[list[str]]]:
    """min/median per system and measurement; Spark/Ember ratios; each target checked
    against the median of every system in ``judged``. Returns (figures, header, lines)."""
    names = list(results)
    header = ["measurement"] + [f"{n} {k}" for n in names for k in ("min", "median")]
    if "spark" in names:
        header += [f"spark/{n}" for n in judged]
    header += ["target", "met"]
    figures: dict[str, Any] = {}
    lines = []
    for key in results[judged[0]][0]:
        stats = {n: summary([r[key] for r in results[n]]) for n in names}
        figures[key] = stats
        line = [key] + [fmt(stats[n][k]) for n in names for k in ("min", "median")]
        if "spark" in names:
            line += [f"{stats['spark']['median'] / stats[n]['median']:.1f}x" for n in judged]
        target = targets.get(key)
        if target is None:
            line += ["", ""]
        else:
            met = all(stats[n]["median"] <= target for n in judged)
            line += [f"<= {target:g}", "yes" if met else "NO"]
        lines.append(line)
    return figures, header, lines


def save(path: Path | None, **payload: Any) -> None:
    """Write the raw figures as JSON when --json was given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))


class Sink:
    """A connection that takes every message and sends it nowhere: a simulated peer of a
    master built in the benchmark's own process."""

    peer = "sim"
    closed = False

    @property
    def proven(self) -> Any:  # what a plain connection proved: nothing
        from toolkit.runtime.wire import PLAIN

        return PLAIN

    def send(self, message: Any) -> bool:
        return True

    def close(self) -> None:
        pass
