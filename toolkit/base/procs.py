"""Is a pid really our daemon? Read from /proc: alive, not a zombie, and our command line."""

from __future__ import annotations

import contextlib
import enum
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.base.pidfile import read_pid_file


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str
    argv: tuple[str, ...]
    start_ticks: int

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")

    @property
    def program(self) -> str:
        return " ".join(self.argv[:3]) if self.argv else "(unknown)"

    def uptime(self) -> float:
        boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, boot_uptime - self.start_ticks / os.sysconf("SC_CLK_TCK"))


def proc_info(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    argv = tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0") if a)
    return ProcInfo(pid, fields[0], argv, int(fields[19]))


def is_ours(info: ProcInfo, role: str, pid_file: Path) -> bool:
    """Our runtime for this role, started with exactly this pid file."""
    argv = info.argv
    with_pid_file = any(argv[i] == "--pid-file" and argv[i + 1] == str(pid_file)
                        for i in range(len(argv) - 1))
    return with_pid_file and role in argv and "toolkit" in argv


class Found(enum.Enum):
    RUNNING = "running"
    DEAD = "dead"          # pid file present, process gone (or a zombie)
    STALE = "stale"        # pid file names a live process that is not ours
    ABSENT = "absent"      # no pid file


@dataclass(frozen=True)
class PidState:
    found: Found
    pid: int | None = None
    info: ProcInfo | None = None


def check(pid_file: Path, role: str) -> PidState:
    pid = read_pid_file(pid_file)
    if pid is None:
        return PidState(Found.DEAD if pid_file.exists() else Found.ABSENT)
    info = proc_info(pid)
    if info is None or info.zombie:
        return PidState(Found.DEAD, pid, info)
    if not is_ours(info, role, pid_file):
        return PidState(Found.STALE, pid, info)
    return PidState(Found.RUNNING, pid, info)


def gone(pid: int, started: int | None = None) -> bool:
    """The process ended: no such pid, a zombie, or (``started``: its start time, in clock
    ticks since boot) another process that took the pid since."""
    info = proc_info(pid)
    return info is None or info.zombie or (started is not None and info.start_ticks != started)


def wait_gone(pid: int, timeout: float, started: int | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid, started):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class Stopped(enum.Enum):
    """How a stop ended."""

    GONE = "gone"      # it ended on SIGTERM (or was not running)
    KILLED = "killed"  # it outlived the stop timeout: SIGKILL ended it
    ALIVE = "alive"    # it outlived SIGKILL too


def terminate(pid: int, timeout: float) -> Stopped:
    """SIGTERM, up to ``timeout`` seconds, then SIGKILL of its group: of this process only,
    never of one that took its pid meanwhile. It is held by a pidfd, which names the process,
    not the number (by its start time where pidfds are missing)."""
    info = proc_info(pid)
    if info is None or info.zombie:
        return Stopped.GONE
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return Stopped.GONE
    except OSError:  # no pidfds here: its start time (in clock ticks) tells it apart
        handle = None
    try:
        def ended(seconds: float) -> bool:
            if handle is None:
                return wait_gone(pid, seconds, info.start_ticks)
            return bool(select.select([handle], [], [], seconds)[0])

        try:
            if handle is not None:
                signal.pidfd_send_signal(handle, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return Stopped.GONE
        if ended(timeout):
            return Stopped.GONE
        kill_group(pid, info.start_ticks)  # still running: the pid is still its own
        return Stopped.KILLED if ended(5.0) else Stopped.ALIVE
    finally:
        if handle is not None:
            os.close(handle)


def kill_group(pid: int, started: int | None = None) -> None:
    """SIGKILL the process's group when it leads one (it does: setsid/setpgrp), else the pid;
    nothing when ``started`` says the pid is now another process's."""
    if started is not None and gone(pid, started):
        return
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def format_uptime(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock
