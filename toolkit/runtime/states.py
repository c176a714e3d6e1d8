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
