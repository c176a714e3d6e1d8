"""What the master remembers about workers, drivers, applications and executors.

Records mutated only by the master's handlers. Every change of a record's state goes through
one method, which checks that the record may go there from where it is (the tables below; as
supervisor's ``_assertInState``): an illegal move raises IllegalTransition instead of passing
silently. Moving to the state a record is already in changes nothing and says so (False).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from toolkit.runtime import messages as m
from toolkit.runtime.states import (
    FINISHED_APP_STATES,
    FINISHED_DRIVER_STATES,
    FINISHED_EXECUTOR_STATES,
    ApplicationState,
    DriverState,
    ExecutorState,
    WorkerState,
)

if TYPE_CHECKING:
    from toolkit.runtime.wire import Connection

class IllegalTransition(RuntimeError):
    """A record was asked to move where it cannot go from its state: a bug, not bad input."""


E = TypeVar("E", DriverState, ExecutorState, ApplicationState, WorkerState)

DRIVER_MOVES: dict[DriverState, frozenset[DriverState]] = {
    DriverState.SUBMITTED: FINISHED_DRIVER_STATES | {DriverState.RUNNING},
    DriverState.RUNNING: FINISHED_DRIVER_STATES,
}
EXECUTOR_MOVES: dict[ExecutorState, frozenset[ExecutorState]] = {
    ExecutorState.LAUNCHING: FINISHED_EXECUTOR_STATES | {ExecutorState.RUNNING},
    ExecutorState.RUNNING: FINISHED_EXECUTOR_STATES,
}
APP_MOVES: dict[ApplicationState, frozenset[ApplicationState]] = {
    # UNKNOWN also when its program's link was reset: it may come back
    ApplicationState.WAITING: FINISHED_APP_STATES | {ApplicationState.RUNNING,
                                                     ApplicationState.UNKNOWN},
    ApplicationState.RUNNING: FINISHED_APP_STATES | {ApplicationState.UNKNOWN},
    # read back by a recovering master: its driver program comes back, or it does not
    ApplicationState.UNKNOWN: FINISHED_APP_STATES | {ApplicationState.WAITING,
                                                     ApplicationState.RUNNING},
}
WORKER_MOVES: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.ALIVE: frozenset({WorkerState.DEAD}),
    # a worker a recovering master has not heard from yet: it answers, or it is dead
    WorkerState.UNKNOWN: frozenset({WorkerState.ALIVE, WorkerState.DEAD}),
}


def may_move(current: E, to: E, moves: dict[E, frozenset[E]]) -> bool:
    return to == current or to in moves.get(current, frozenset())


def _move(what: str, current: E, to: E, moves: dict[E, frozenset[E]]) -> bool:
    """True if ``current`` -> ``to`` changes the state; raise if it may not happen."""
    if not may_move(current, to, moves):
        raise IllegalTransition(f"{what} cannot go from {current} to {to}")
    return to != current


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


def retain(items: list[T], item: T) -> list[T]:
    """Append to a completed list, dropping the oldest tenth once it holds RETAINED; what was
    dropped."""
    dropped: list[T] = []
    if len(items) >= RETAINED:
        dropped = items[:max(1, RETAINED // 10)]
        del items[:max(1, RETAINED // 10)]
    items.append(item)
    return dropped


RAN_WELL = 60.0
"""Seconds an executor runs before its failure no longer counts with the ones before it."""

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
    kill_asked: bool = False
    """A kill was sent to its worker: sent again when the worker reports it still runs."""

    @property
    def main_class(self) -> str:
        return self.desc.main_class or self.desc.name or self.desc.command[0]

    def seen_by(self, scope: str) -> bool:
        """Whether a job's scope (``driver:<id>``, keys.py) may see this driver: itself, or a
        driver it submitted."""
        return scope in (f"driver:{self.id}", self.desc.owner)

    def launch(self, worker: WorkerInfo, now: float) -> None:
        """SUBMITTED -> RUNNING on ``worker`` (launched once: RUNNING again is a bug)."""
        if not _move(f"driver {self.id}", self.state, DriverState.RUNNING, DRIVER_MOVES):
            raise IllegalTransition(f"driver {self.id} cannot go from RUNNING to RUNNING")
        self.state, self.started, self.epoch = DriverState.RUNNING, now, worker.epoch
        self.worker_id, self.worker_host_port = worker.id, worker.address

    def finish(self, state: DriverState, message: str | None = None,
               exit_code: int | None = None) -> None:
        """SUBMITTED/RUNNING -> a final state; a final driver never changes again."""
        if state not in FINISHED_DRIVER_STATES or state == self.state:
            raise IllegalTransition(f"driver {self.id}: {state} is not a final state it can "
                                    f"reach from {self.state}")
        _move(f"driver {self.id}", self.state, state, DRIVER_MOVES)
        self.state, self.message, self.exit_code = state, message, exit_code

    def status(self) -> m.DriverStatusResponse:
        return m.DriverStatusResponse(self.id, True, self.state, self.worker_id,
                                      self.worker_host_port, self.message, self.exit_code,
                                      self.relaunched_as)


REMOVED_KEPT = 100
"""Ended executors an application keeps listed."""


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
    exit_code: int | None = None
    """Its command's exit code, once it ended (shown on the application's page)."""
    running_since: float | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.app_id, self.exec_id

    def may_move(self, state: ExecutorState) -> bool:
        return may_move(self.state, state, EXECUTOR_MOVES)

    def move(self, state: ExecutorState) -> bool:
        """LAUNCHING -> RUNNING -> a final state; True if the state changed."""
        changed = _move(f"executor {self.app_id}/{self.exec_id}", self.state, state,
                        EXECUTOR_MOVES)
        self.state = state
        return changed


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
    removed: collections.deque[ExecutorInfo] = field(
        default_factory=lambda: collections.deque(maxlen=REMOVED_KEPT))
    """Its executors that ended, newest last (the application's page lists them)."""

    @property
    def requested_cores(self) -> int:
        return self.desc.max_cores or DEFAULT_CORES

    @property
    def cores_granted(self) -> int:
        return sum(e.cores for e in self.executors.values())

    @property
    def cores_left(self) -> int:
        return self.requested_cores - self.cores_granted

    def count_failure(self, executor: ExecutorInfo, now: float) -> None:
        """One more executor failed. One that ran a while (RAN_WELL) first starts the count
        again: only failures in a row fail an application, so a long one that loses an
        executor now and then lives on, while executors that crash at once still fail it."""
        since = executor.running_since
        if since is not None and now - since >= RAN_WELL:
            self.retry_count = 0
        self.retry_count += 1

    def add_executor(self, worker_id: str, host_port: str, cores: int) -> ExecutorInfo:
        executor = ExecutorInfo(self.id, self.next_exec_id, worker_id, host_port, cores,
                                self.desc.memory_per_executor)
        self.next_exec_id += 1
        self.executors[executor.exec_id] = executor
        return executor

    def start(self) -> bool:
        """WAITING -> RUNNING once it has an executor; True if the state changed."""
        changed = _move(f"application {self.id}", self.state, ApplicationState.RUNNING,
                        APP_MOVES)
        self.state = ApplicationState.RUNNING
        return changed

    def detach(self) -> None:
        """WAITING/RUNNING -> UNKNOWN: its program's link was reset; its executors go on."""
        _move(f"application {self.id}", self.state, ApplicationState.UNKNOWN, APP_MOVES)
        self.state, self.conn = ApplicationState.UNKNOWN, None

    def reattach(self, conn: Connection) -> None:
        """UNKNOWN -> RUNNING (or WAITING, with no executor): its driver program came back."""
        state = ApplicationState.RUNNING if self.executors else ApplicationState.WAITING
        _move(f"application {self.id}", self.state, state, APP_MOVES)
        self.state, self.conn = state, conn

    def end(self, state: ApplicationState, now: float) -> None:
        """WAITING/RUNNING -> a final state."""
        if state not in FINISHED_APP_STATES or state == self.state:
            raise IllegalTransition(f"application {self.id}: {state} is not a final state "
                                    f"it can reach from {self.state}")
        _move(f"application {self.id}", self.state, state, APP_MOVES)
        self.state, self.ended = state, now

    def remove_executor(self, executor: ExecutorInfo) -> None:
        if self.executors.pop(executor.exec_id, None) is not None:
            self.removed.append(executor)

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

    def die(self, reason: str) -> None:
        """ALIVE -> DEAD: its heartbeats stopped, its link closed, or it said it stops."""
        if not _move(f"worker {self.id}", self.state, WorkerState.DEAD, WORKER_MOVES):
            raise IllegalTransition(f"worker {self.id} is DEAD already")
        self.state, self.removed_reason = WorkerState.DEAD, reason

    def reattach(self, conn: Connection) -> None:
        """A worker that is not DEAD registered again (a new link): same record, next
        epoch, ALIVE."""
        _move(f"worker {self.id}", self.state, WorkerState.ALIVE, WORKER_MOVES)
        self.state, self.conn = WorkerState.ALIVE, conn
        self.epoch += 1
