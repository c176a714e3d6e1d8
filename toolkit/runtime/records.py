"""What the master remembers about workers, drivers, applications and executors.

Plain records mutated only by the master's handlers; transitions that have rules (which state may
follow which) go through one method each, so an illegal move raises instead of passing silently.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from toolkit.runtime import messages as m
from toolkit.runtime.states import (
    FINISHED_DRIVER_STATES,
    ApplicationState,
    DriverState,
    ExecutorState,
    WorkerState,
)

if TYPE_CHECKING:
    from toolkit.runtime.wire import Connection

RETAINED = 200
"""Completed drivers and applications kept for /json; then the oldest tenth goes (Spark's)."""

DEFAULT_CORES = 2**31 - 1
"""An application with no max cores asks for all (Spark's spark.deploy.defaultCores)."""

T = TypeVar("T")


def make_id(kind: str, now: float, number: int) -> str:
    """``driver-<yyyyMMddHHmmss>-0007`` / ``app-...``, as Spark names them."""
    return f"{kind}-{time.strftime('%Y%m%d%H%M%S', time.localtime(now))}-{number:04d}"


def java_date(now: float) -> str:
    """Spark's ``submitdate``: java.util.Date.toString, like ``Sun Nov 22 04:20:25 UTC 2026``."""
    return time.strftime("%a %b %d %H:%M:%S %Z %Y", time.localtime(now))


def retain(items: list[T], item: T) -> None:
    """Append to a completed list, dropping the oldest tenth once it holds RETAINED."""
    if len(items) >= RETAINED:
        del items[:max(1, RETAINED // 10)]
    items.append(item)


@dataclass
class DriverInfo:
    id: str
    desc: m.DriverDescription
    submitted: float
    state: DriverState = DriverState.SUBMITTED
    worker_id: str | None = None
    worker_host_port: str | None = None
    started: float | None = None
    message: str | None = None
    exit_code: int | None = None
    relaunched_as: str | None = None
    epoch: int = 0
    """Its worker's registration epoch when it was launched there."""

    @property
    def main_class(self) -> str:
        return self.desc.main_class or self.desc.name or self.desc.command[0]

    def finish(self, state: DriverState, message: str | None = None,
               exit_code: int | None = None) -> None:
        """RUNNING/SUBMITTED -> a final state; a final driver never changes again."""
        if self.state in FINISHED_DRIVER_STATES:
            raise ValueError(f"driver {self.id} is already {self.state}, not {state}")
        if state not in FINISHED_DRIVER_STATES:
            raise ValueError(f"{state} is not a final driver state")
        self.state, self.message, self.exit_code = state, message, exit_code

    def status(self) -> m.DriverStatusResponse:
        return m.DriverStatusResponse(self.id, True, self.state, self.worker_id,
                                      self.worker_host_port, self.message, self.exit_code,
                                      self.relaunched_as)


@dataclass
class ExecutorInfo:
    app_id: str
    exec_id: int
    worker_id: str
    worker_host_port: str
    cores: int
    memory: int
    state: ExecutorState = ExecutorState.LAUNCHING
    epoch: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return self.app_id, self.exec_id


@dataclass
class AppInfo:
    id: str
    desc: m.ApplicationDescription
    conn: Connection | None
    submitted: float
    state: ApplicationState = ApplicationState.WAITING
    executors: dict[int, ExecutorInfo] = field(default_factory=dict)
    next_exec_id: int = 0
    retry_count: int = 0
    ended: float | None = None

    @property
    def requested_cores(self) -> int:
        return self.desc.max_cores or DEFAULT_CORES

    @property
    def cores_granted(self) -> int:
        return sum(e.cores for e in self.executors.values())

    @property
    def cores_left(self) -> int:
        return self.requested_cores - self.cores_granted

    def add_executor(self, worker_id: str, host_port: str, cores: int) -> ExecutorInfo:
        executor = ExecutorInfo(self.id, self.next_exec_id, worker_id, host_port, cores,
                                self.desc.memory_per_executor)
        self.next_exec_id += 1
        self.executors[executor.exec_id] = executor
        return executor

    def remove_executor(self, executor: ExecutorInfo) -> None:
        self.executors.pop(executor.exec_id, None)

    def running(self) -> Iterable[ExecutorInfo]:
        return (e for e in self.executors.values() if e.state == ExecutorState.RUNNING)


@dataclass
class WorkerInfo:
    """What the master knows of one worker."""

    id: str
    host: str
    port: int
    cores: int
    memory: int
    webui_url: str
    conn: Connection | None
    last_heartbeat: float
    """Wall-clock time of the last heartbeat, for display (/json lastheartbeat)."""
    last_seen: float
    """Monotonic time of the same heartbeat: liveness never depends on clock steps."""
    state: WorkerState = WorkerState.ALIVE
    removed_reason: str | None = field(default=None)
    drivers: dict[str, DriverInfo] = field(default_factory=dict)
    executors: dict[tuple[str, int], ExecutorInfo] = field(default_factory=dict)
    epoch: int = 0
    """Counts registrations: work launched in an earlier epoch must be in the worker's next
    WorkerLatestState, or it was lost."""

    @property
    def cores_used(self) -> int:
        return (sum(d.desc.cores for d in self.drivers.values())
                + sum(e.cores for e in self.executors.values()))

    @property
    def memory_used(self) -> int:
        return (sum(d.desc.memory for d in self.drivers.values())
                + sum(e.memory for e in self.executors.values()))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def cores_free(self) -> int:
        return self.cores - self.cores_used

    @property
    def memory_free(self) -> int:
        return self.memory - self.memory_used
