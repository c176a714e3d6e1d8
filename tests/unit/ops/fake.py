"""A fake transport for unit tests of the ops operations: no SSH, no processes.

Each FakeHost is a Transport like the real ones: it provides ``start`` (and files) and gets
``run`` and ``stream`` from the same code as LocalHost and SSHHost. It answers commands from a
script (a function of the command's argv and its standard input), records every command, and
can be down (every call raises HostError, as an SSH host that refuses connections does), hang
(the command times out, exit 124, as the real transports report it), or say garbage.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from toolkit.daemon.protocol import Report, read_order
from toolkit.ops.transport import HostError, Result, Transport

HANG = object()
Answer = Result | object
Script = Callable[[list[str], bytes], Answer]


@dataclass
class Call:
    argv: list[str]
    stdin: bytes = b""
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class FakeHost(Transport):
    name: str
    script: Script
    down: str | None = None  # the reason every call fails, when set
    calls: list[Call] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)

    def _check(self) -> None:
        if self.down is not None:
            raise HostError(self.down)

    def _answer(self, call: Call, timeout: float | None) -> Result:
        self.calls.append(call)
        answer = self.script(call.argv, call.stdin)
        if answer is HANG:
            return Result(self.name, " ".join(call.argv), 124, "", f"timed out after {timeout} s")
        assert isinstance(answer, Result)
        return answer

    def connect(self) -> None:
        self._check()

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> FakeSession:
        self._check()
        return FakeSession(self, list(argv), dict(env or {}))

    def put(self, path: str, data: bytes, mode: int = 0o644) -> bool:
        self._check()
        changed = self.files.get(path) != data
        self.files[path] = data
        return changed

    def read(self, path: str) -> bytes | None:
        self._check()
        return self.files.get(path)

    def close(self) -> None:
        pass


@dataclass
class FakeSession:
    host: FakeHost
    argv: list[str]
    env: dict[str, str]
    sent: bytes = b""

    killed: bool = False
    _result: Result | None = None

    def send(self, data: bytes, end: bool = False) -> None:
        self.sent += data

    def finish(self, data: bytes = b"", timeout: float | None = None) -> Result:
        if self._result is None:
            self._result = self.host._answer(Call(self.argv, self.sent + data, self.env),
                                             timeout)
        return self._result

    def lines(self, stop: threading.Event | None = None) -> Iterator[str]:
        result = self.finish()
        yield from (result.stdout + result.stderr).splitlines()

    def kill(self) -> None:
        self.killed = True


# Scripts: what a healthy host's `ember daemon` answers ----------------------------------


def action_of(argv: list[str]) -> tuple[str, str, list[int]]:
    """(action, role, instances) of an `ember daemon ACTION ROLE 1,2 ...` command."""
    at = argv.index("daemon")
    action, role = argv[at + 1], argv[at + 2]
    instances = [int(i) for i in argv[at + 3].split(",")] if len(argv) > at + 3 and (
        argv[at + 3][:1].isdigit()) else [1]
    return action, role, instances


def healthy(argv: list[str], stdin: bytes) -> Result:
    """A host where every action works: starts are ready, statuses say running."""
    action, role, instances = action_of(argv)
    if "--when-told" in argv:
        order = read_order(stdin.decode().splitlines()[-1] if stdin else "")
        if not order.go:
            lines = [Report(role, i, 1, [f"{role} {i} not started: {order.reason}"]).line()
                     for i in instances]
            return Result("h", " ".join(argv), 1, "\n".join(lines) + "\n", "")
    if action == "status":
        out = "\n".join(json.dumps({"role": role, "instance": i, "code": 0, "state": "running",
                                    "pid": 100 + i, "uptime": 5.0, "detail": None})
                        for i in instances)
        return Result("h", " ".join(argv), 0, out + "\n", "")
    said = {"start": "ready as process 42", "stop": f"stopping {role}"}.get(action, "done")
    out = "\n".join(Report(role, i, 0, [f"{role} {i} {said}"]).line() for i in instances)
    return Result("h", " ".join(argv), 0, out + "\n", "")
