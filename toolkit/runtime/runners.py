"""DriverRunner and ExecutorRunner: start a command in its own directory and process group,
watch it, and report every state change through a callback (the worker posts it to its inbox).

A child's exit is watched with a pidfd on the event loop: no thread or SIGCHLD handler per
process, so a worker can run hundreds of short drivers a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from toolkit.runtime import messages as m
from toolkit.runtime.states import DriverState, ExecutorState
from toolkit.settings import default_of

logger = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
"""Seconds before a supervised driver's first restart; doubles after each quick failure."""
MAX_BACKOFF = 60.0
"""Spark's supervise backoff grows without bound; Ember's stops here."""
STABLE_RUN = 5.0
"""A run longer than this resets the backoff to FIRST_BACKOFF (Spark's successfulRunDuration)."""
KILL_TIMEOUT: float = default_of("worker", "kill_timeout")
"""SIGTERM to the process group, then SIGKILL after this long (Spark's 10 s)."""

State = DriverState | ExecutorState
Report = Callable[[State, str, "int | None"], None]
Env = dict[str, str] | Callable[[], dict[str, str]]
"""report(state, message, exit_code)"""


def launch_header(argv: list[str]) -> bytes:
    """First lines of a driver's stderr, as Spark's DriverRunner writes them."""
    quoted = " ".join(f'"{arg}"' for arg in argv)
    return f"Launch Command: {quoted}\n{'=' * 40}\n\n".encode()


def fill_placeholders(command: list[str], values: dict[str, str]) -> list[str]:
    """Replace {{EXECUTOR_ID}} and friends in each argument (never joined into a shell line)."""
    filled = []
    for arg in command:
        for name, value in values.items():
            arg = arg.replace("{{" + name + "}}", value)
        filled.append(arg)
    return filled


@functools.cache
def death_guard() -> tuple[str, ...]:
    """``setpriv --pdeathsig TERM --`` when util-linux has it: the command then gets SIGTERM if
    its worker dies, even by SIGKILL (Spark leaves such drivers and executors running). Looked
    up at the first launch, not at start-up, and off the event loop (``death_guard_ready``).

    A wrapper that execs, rather than a preexec_fn, keeps the fast vfork path of subprocess:
    forking a Python process costs about 5 ms, the wrapper about 1 ms.
    """
    setpriv = shutil.which("setpriv")
    usage = ""
    if setpriv is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True,
                                   timeout=5, check=False).stdout
    if setpriv is None or "--pdeathsig" not in usage:
        logger.warning("setpriv --pdeathsig is not available: drivers and executors will "
                       "outlive their worker if it is killed with SIGKILL")
        return ()
    return (setpriv, "--pdeathsig", "TERM", "--")


async def death_guard_ready() -> None:
    """Run death_guard's one-time probe (`setpriv --help`, a process) in a thread, so that the
    worker's event loop (heartbeats, every other runner) never waits for it."""
    if not death_guard.cache_info().currsize:
        await asyncio.to_thread(death_guard)


def check_program(program: str, cwd: Path, env: dict[str, str]) -> None:
    """Raise OSError unless ``program`` names an executable, looked up the way exec would
    (the wrapper would otherwise turn a missing program into exit code 127)."""
    if "/" in program:
        path = cwd / program
        if os.access(path, os.X_OK) and path.is_file():
            return
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is not None:
        return
    raise FileNotFoundError(errno.ENOENT, "no such executable", program)


def cannot_start(program: str, exc: OSError, cwd: Path) -> str:
    where = f" (relative to the run directory {cwd})" if "/" in program and not (
        program.startswith("/")) else ""
    return f"cannot start {program!r}: {exc.strerror or exc}{where}"


def spawn(argv: list[str], cwd: Path, env: dict[str, str], header: bytes = b""
          ) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group) with stdout/stderr files in
    ``cwd``, appending; ``header`` goes first into stderr. Raises OSError. The directory (and
    an application's, above an executor's) is 0700 and the output files 0600: a job's output
    and files are its own user's, not every local user's."""
    cwd.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cwd.mkdir(exist_ok=True, mode=0o700)
    check_program(argv[0], cwd, env)
    with _private(cwd / "stdout") as out, _private(cwd / "stderr") as err:
        if header:
            err.write(header)
            err.flush()
        return subprocess.Popen([*death_guard(), *argv], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True)


def _private(path: Path) -> BinaryIO:
    """``path`` opened to append, created 0600."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


async def until_exited(pid: int) -> None:
    """Return once child ``pid`` has exited, without reaping it.

    While it is an unreaped zombie its pid, and so its process group id, cannot be reused:
    signalling the group stays safe until the caller reaps it. A pidfd on the event loop
    needs no thread; without pidfd support a thread waits with WNOWAIT.
    """
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Live processes of group ``pgid`` other than its leader (read from /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


class _Runner:
    """What both runners share: one task, a kill that escalates, a report callback.

    A child is reaped only by this task, after its whole process group has been dealt with, so
    no signal ever goes to a pid that could have been reused.
    """

    def __init__(self, directory: Path, env: Env, report: Report,
                 kill_timeout: float) -> None:
        self.directory = directory
        self.env = env
        """Or what makes it at launch (a driver's credential file): a failure is reported."""
        self.report = report
        self.kill_timeout = kill_timeout
        self.state: State | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False
        self._unreaped = False
        self._deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._guarded(), name=f"runner {self.directory.name}")

    def kill(self) -> None:
        """SIGTERM the process group now and SIGKILL what is left of it after kill_timeout; a
        runner not started yet, or waiting to restart, starts nothing more."""
        if self.killed:
            return
        self.killed = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.kill_timeout
        self._wake.set()
        if self._unreaped and self.proc is not None:
            signal_group(self.proc.pid, signal.SIGTERM)
            loop.call_at(self._deadline, self._escalate, self.proc)

    def _escalate(self, proc: subprocess.Popen[bytes]) -> None:
        """Deadline passed: SIGKILL the group, unless its leader was reaped (then its pid, and
        so the group id, may belong to someone else by now)."""
        if self._unreaped and self.proc is proc:
            logger.warning("Process group %d did not stop on SIGTERM; sending SIGKILL",
                           proc.pid)
            signal_group(proc.pid, signal.SIGKILL)

    async def stop(self, timeout: float) -> None:
        """Kill and wait up to ``timeout``, then SIGKILL the group (worker shutdown)."""
        self.kill()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            if self._unreaped and self.proc is not None:
                signal_group(self.proc.pid, signal.SIGKILL)

    def _launch(self, argv: list[str], cannot: State) -> subprocess.Popen[bytes] | None:
        """Start ``argv``, or report KILLED (killed before this) or ``cannot`` (no program)
        and return None."""
        if self.killed:
            self._say(self._killed_state(), "killed before it started")
            return None
        try:
            env = self.env() if callable(self.env) else self.env
        except OSError as exc:  # a full disk: reported like a program that cannot start
            self._say(cannot, f"cannot prepare the environment of {argv[0]!r} in "
                              f"{self.directory}: {exc.strerror or exc}")
            return None
        try:
            proc = spawn(argv, self.directory, env, launch_header(argv))
        except OSError as exc:
            self._say(cannot, cannot_start(argv[0], exc, self.directory))
            return None
        self.proc, self._unreaped = proc, True
        return proc

    async def _wait(self, proc: subprocess.Popen[bytes]) -> int:
        """The exit code of ``proc`` (-N: signal N). When killed, the rest of its group gets
        until the deadline after the leader exits; only then is the leader reaped. A leader
        that ended by itself takes what it left in its group with it (SIGTERM, then SIGKILL
        after kill_timeout): its cores and memory are free for other work now."""
        await until_exited(proc.pid)
        if not self.killed and group_members(proc.pid):
            signal_group(proc.pid, signal.SIGTERM)
            self._deadline = asyncio.get_running_loop().time() + self.kill_timeout
            await self._drain_group(proc.pid)
            self._deadline = None
        elif self.killed:
            await self._drain_group(proc.pid)
        code = proc.wait()
        self._unreaped = False
        return code

    async def _drain_group(self, pgid: int) -> None:
        while group_members(pgid):
            if self._deadline is None or asyncio.get_running_loop().time() >= self._deadline:
                signal_group(pgid, signal.SIGKILL)
                return
            await asyncio.sleep(0.05)

    def _say(self, state: State, message: str = "", exit_code: int | None = None) -> None:
        self.state = state
        self.report(state, message, exit_code)

    async def _guarded(self) -> None:
        try:
            await death_guard_ready()
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("Runner for %s failed", self.directory)
            if self._unreaped and self.proc is not None:
                signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self._unreaped = False
            self._say(self._error_state(), f"{exc.__class__.__name__}: {exc}")

    async def _run(self) -> None:
        raise NotImplementedError

    def _error_state(self) -> State:
        raise NotImplementedError

    def _killed_state(self) -> State:
        raise NotImplementedError


class DriverRunner(_Runner):
    """Runs one driver in ``<work>/<driver-id>/``; with supervise, restarts it on failure."""

    def __init__(self, driver_id: str, desc: m.DriverDescription, work_dir: Path,
                 env: Env, report: Report, kill_timeout: float = KILL_TIMEOUT,
                 first_backoff: float = FIRST_BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        super().__init__(work_dir / driver_id, env, report, kill_timeout)
        self.driver_id = driver_id
        self.desc = desc
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.restarts = 0

    def _error_state(self) -> State:
        return DriverState.ERROR

    def _killed_state(self) -> State:
        return DriverState.KILLED

    async def _run(self) -> None:
        delay = self.first_backoff
        argv = self.desc.command
        while True:
            proc = self._launch(argv, DriverState.ERROR)
            if proc is None:
                return
            began = time.monotonic()
            if not self.state:
                self._say(DriverState.RUNNING)
            code = await self._wait(proc)
            ran = time.monotonic() - began
            if self.killed:
                self._say(DriverState.KILLED, "killed", code)
                return
            if code == 0:
                self._say(DriverState.FINISHED, "", 0)
                return
            if not self.desc.supervise:
                self._say(DriverState.FAILED, f"exited with code {code}", code)
                return
            if ran > STABLE_RUN:
                delay = self.first_backoff
            self.restarts += 1
            note = (f"Ember: driver exited with code {code} after {ran:.1f} s; restart "
                    f"{self.restarts} in {delay:g} s\n")
            with contextlib.suppress(OSError), open(self.directory / "stderr", "a") as err:
                err.write(note)
            logger.warning("Driver %s exited with code %d; restarting in %g s", self.driver_id,
                           code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if self.killed:
                self._say(DriverState.KILLED, "killed while waiting to restart")
                return
            delay = min(delay * 2, self.max_backoff)


class ExecutorRunner(_Runner):
    """Runs one executor in ``<work>/<app-id>/<exec-id>/`` with its placeholders filled."""

    def __init__(self, app_id: str, exec_id: int, desc: m.ApplicationDescription, cores: int,
                 memory: int, work_dir: Path, env: Env, values: dict[str, str],
                 report: Report, kill_timeout: float = KILL_TIMEOUT) -> None:
        super().__init__(work_dir / app_id / str(exec_id), env, report, kill_timeout)
        self.app_id, self.exec_id, self.desc = app_id, exec_id, desc
        self.cores, self.memory = cores, memory
        self.argv = fill_placeholders(desc.command, values)
        self.state = ExecutorState.LAUNCHING

    def _error_state(self) -> State:
        return ExecutorState.FAILED

    def _killed_state(self) -> State:
        return ExecutorState.KILLED

    async def _run(self) -> None:
        proc = self._launch(self.argv, ExecutorState.FAILED)
        if proc is None:
            return
        self._say(ExecutorState.RUNNING)
        code = await self._wait(proc)
        if self.killed:
            self._say(ExecutorState.KILLED, "killed", code)
        else:
            self._say(ExecutorState.EXITED, f"Command exited with code {code}", code)
