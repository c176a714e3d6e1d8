"""State enums of the runtime. Imports nothing but the standard library."""

from enum import StrEnum


class MasterState(StrEnum):
    STANDBY = "STANDBY"
    ALIVE = "ALIVE"
    RECOVERING = "RECOVERING"
    COMPLETING_RECOVERY = "COMPLETING_RECOVERY"


class WorkerState(StrEnum):
    ALIVE = "ALIVE"
    DEAD = "DEAD"
    DECOMMISSIONED = "DECOMMISSIONED"
    UNKNOWN = "UNKNOWN"


class DriverState(StrEnum):
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    RELAUNCHING = "RELAUNCHING"
    UNKNOWN = "UNKNOWN"
    KILLED = "KILLED"
    FAILED = "FAILED"
    ERROR = "ERROR"


class ExecutorState(StrEnum):
    LAUNCHING = "LAUNCHING"
    RUNNING = "RUNNING"
    KILLED = "KILLED"
    FAILED = "FAILED"
    LOST = "LOST"
    EXITED = "EXITED"
    DECOMMISSIONED = "DECOMMISSIONED"


class ApplicationState(StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    UNKNOWN = "UNKNOWN"


FINISHED_DRIVER_STATES = frozenset({DriverState.FINISHED, DriverState.KILLED,
                                    DriverState.FAILED, DriverState.ERROR,
                                    DriverState.RELAUNCHING})
"""A driver in one of these states no longer runs anywhere (RELAUNCHING: a new id took over)."""

REPORTED_DRIVER_ENDS = FINISHED_DRIVER_STATES - {DriverState.RELAUNCHING}
"""The final states a worker reports for a driver (RELAUNCHING is the master's own)."""

FINISHED_EXECUTOR_STATES = frozenset({ExecutorState.KILLED, ExecutorState.FAILED,
                                      ExecutorState.LOST, ExecutorState.EXITED})

FINISHED_APP_STATES = frozenset({ApplicationState.FINISHED, ApplicationState.FAILED,
                                 ApplicationState.KILLED})


def is_finished(state: DriverState | ExecutorState | ApplicationState) -> bool:
    return (state in FINISHED_DRIVER_STATES or state in FINISHED_EXECUTOR_STATES
            or state in FINISHED_APP_STATES)
