"""Host transports on one primitive: ``start`` a command, ``send`` to it, read its ``lines``,
``finish`` it (its Result). ``run`` and ``stream`` are written once, on top of ``start``, so a
local and an SSH host behave the same, exit codes, timeouts and errors included:

- a command that ran gives its exit code (127: it could not be started here);
- a command still running at its timeout is ended: exit 124, ``timed out after N s``;
- a host that cannot be reached raises HostError, whose text says why (once, per host).

``LocalHost`` runs here without a shell; ``SSHHost`` (ssh.py) runs over paramiko with the host
key verified. Commands are argv lists, quoted with shlex for a remote shell: no inventory value
can inject.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from toolkit.base.files import write_atomic
from toolkit.errors import EmberError


class HostError(EmberError, ConnectionError):
    """A host could not be reached, or refused us; the message says which and why."""


@dataclass(frozen=True)
class Result:
    host: str
    command: str
    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, lines: int = 10) -> str:
        return "\n".join((self.stdout + self.stderr).strip().splitlines()[-lines:])


OUTPUT_GRACE = 2.0  # seconds the output may outlast its command (a child left holding it)
STOPPED = -15  # what stream returns when told to stop, as a terminated local command reads


class Session(Protocol):
    """A command that is still running."""

    def send(self, data: bytes, end: bool = False) -> None: ...
    def lines(self, stop: threading.Event | None = None) -> Iterator[str]: ...
    def finish(self, data: bytes = b"", timeout: float | None = None) -> Result: ...
    def kill(self) -> None: ...


class Host(Protocol):
    name: str

    def connect(self) -> None: ...
    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> Session: ...
    def run(self, argv: list[str], env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Result: ...
    def stream(self, argv: list[str], on_line: Callable[[str], None], stop: threading.Event,
               env: Mapping[str, str] | None = None) -> int: ...
    def put(self, path: str, data: bytes, mode: int = 0o644) -> bool: ...
    def read(self, path: str) -> bytes | None: ...
    def close(self) -> None: ...


class Transport:
    """``run`` and ``stream`` for every host, from its ``start``."""

    name: str

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> Session:
        raise NotImplementedError

    def run(self, argv: list[str], env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Result:
        """The command to its end, its input closed; exit 124 if it outlives ``timeout``."""
        return self.start(argv, env).finish(timeout=timeout)

    def stream(self, argv: list[str], on_line: Callable[[str], None], stop: threading.Event,
               env: Mapping[str, str] | None = None) -> int:
        """Each line of output (stdout and stderr) as it comes, until the command ends (its
        exit code) or ``stop`` is set (the command is ended; STOPPED)."""
        session = self.start(argv, env)
        session.send(b"", end=True)
        for line in session.lines(stop):
            on_line(line)
        if stop.is_set():
            session.kill()
            return STOPPED
        return session.finish().exited


def command_line(argv: list[str], env: Mapping[str, str] | None = None) -> str:
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return shlex.join([*prefix, *argv])


class Pump:
    """Drains a command's stdout and stderr as they come, keeping every chunk in order of
    arrival: the whole output for the Result, and its lines for whoever reads them live."""

    def __init__(self, readers: list[Callable[[int], bytes]],
                 closers: list[Callable[[], None]] | None = None) -> None:
        self._closers = closers or []
        self._chunks: list[tuple[int, bytes]] = []
        self._open = len(readers)
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._drain, args=(n, read), daemon=True)
                         for n, read in enumerate(readers)]
        for thread in self._threads:
            thread.start()

    def _drain(self, stream: int, read: Callable[[int], bytes]) -> None:
        try:
            while chunk := read(65536):
                with self._changed:
                    self._chunks.append((stream, chunk))
                    self._changed.notify_all()
        except (OSError, EOFError, ValueError):
            pass  # the command's end, or its connection's
        finally:
            if self._closers:
                with contextlib.suppress(OSError):
                    self._closers[stream]()
            with self._changed:
                self._open -= 1
                self._changed.notify_all()

    def join(self, timeout: float) -> None:
        """Until every stream has ended, or ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: not self._open, timeout)

    def text(self, stream: int) -> str:
        with self._changed:
            data = b"".join(chunk for n, chunk in self._chunks if n == stream)
        return data.decode(errors="replace")

    def lines(self, stop: threading.Event | None = None) -> Iterator[str]:
        seen = 0
        partial = {0: b"", 1: b""}
        while True:
            with self._changed:
                while seen == len(self._chunks) and self._open and not (stop and stop.is_set()):
                    self._changed.wait(0.2)
                new, seen, ended = self._chunks[seen:], len(self._chunks), not self._open
            if stop is not None and stop.is_set():
                return
            for stream, chunk in new:
                *complete, partial[stream] = (partial[stream] + chunk).split(b"\n")
                for line in complete:
                    yield line.decode(errors="replace")
            if ended:
                for rest in partial.values():
                    if rest:
                        yield rest.decode(errors="replace")
                return


class Process:
    """A started command's common half: its output pump, ``finish`` and ``lines``. A kind of
    host provides how to write its input, close it, wait for its exit code and kill it."""

    def __init__(self, host: str, command: str, pump: Pump | None, failure: str = "",
                 ) -> None:
        self._host = host
        self._command = command
        self._pump = pump
        self._failure = failure  # why it could not start (exit 127)
        self._ended = False

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _close_input(self) -> None:
        raise NotImplementedError

    def _wait(self, timeout: float | None) -> int | None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes, end: bool = False) -> None:
        """Write to the command's input (a command that stopped reading is not an error);
        with ``end``, close it."""
        if self._pump is None or self._ended:
            return
        with contextlib.suppress(OSError, EOFError, ValueError):
            if data:
                self._write(data)
            if end:
                self._ended = True
                self._close_input()

    def lines(self, stop: threading.Event | None = None) -> Iterator[str]:
        if self._pump is None:
            yield from self._failure.splitlines()
            return
        yield from self._pump.lines(stop)

    def finish(self, data: bytes = b"", timeout: float | None = None) -> Result:
        """Send the last input, close it, and wait for the exit code and every output line."""
        if self._pump is None:
            return Result(self._host, self._command, 127, "", self._failure)
        self.send(data, end=True)
        started = time.monotonic()
        code = self._wait(timeout)
        if code is None:
            self.kill()
            self._pump.join(OUTPUT_GRACE)
            return Result(self._host, self._command, 124, self._pump.text(0),
                          self._pump.text(1) + f"timed out after {timeout:g} s")
        # the output has ended with the command, unless a child it left holds it open
        spent = time.monotonic() - started
        self._pump.join(OUTPUT_GRACE if timeout is None else
                        max(0.1, min(OUTPUT_GRACE, timeout - spent)))
        return Result(self._host, self._command, code, self._pump.text(0), self._pump.text(1))


class LocalHost(Transport):
    """The machine running the playbook; no SSH, no shell."""

    def __init__(self, name: str = "localhost") -> None:
        self.name = name

    def connect(self) -> None:
        pass

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> Session:
        return _LocalProcess(self.name, argv, env)

    def put(self, path: str, data: bytes, mode: int = 0o644) -> bool:
        return write_atomic(Path(path), data, mode)

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def close(self) -> None:
        pass


class _LocalProcess(Process):
    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            # the inventory decides EMBER_* values, here as over SSH: none are inherited
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("EMBER_")},
                     **(env or {})})
        except OSError as exc:
            super().__init__(name, command_line(argv, env), None, str(exc))
            return
        out, err = self._proc.stdout, self._proc.stderr
        assert out is not None and err is not None
        super().__init__(name, command_line(argv, env), Pump(
            [lambda n: os.read(out.fileno(), n), lambda n: os.read(err.fileno(), n)],
            [out.close, err.close]))

    def _write(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def _close_input(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()

    def _wait(self, timeout: float | None) -> int | None:
        assert self._proc is not None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
