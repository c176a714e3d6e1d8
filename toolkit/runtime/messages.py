"""Every message of the runtime after the handshake (handshake.py), grouped by direction.

Wire messages are msgspec structs tagged by their class name (the JSON field ``type``), so a
frame decodes straight into the right class and an unknown type is refused at decode time.
Commands are imperative (``ReconnectWorker``), events past tense, RPC pairs
``RequestX``/``XResponse``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from toolkit.runtime.states import DriverState, ExecutorState

Positive = Annotated[int, msgspec.Meta(ge=1)]
Command = Annotated[list[str], msgspec.Meta(min_length=1)]


class Message(msgspec.Struct, tag=True):
    """Base of every message; ``type`` on the wire is the class name."""


# Descriptions carried inside messages (not messages themselves) -----------------------------


class DriverDescription(msgspec.Struct, forbid_unknown_fields=True):
    """What to run as a driver: any command, with the resources it needs on its worker."""

    command: Command
    cores: Positive = 1
    memory: Positive = 1024
    """MiB, like Spark's spark.driver.memory (default 1g)."""
    supervise: bool = False
    name: str = ""
    env: dict[str, str] = {}
    main_class: str = ""
    """Shown as ``mainclass`` in /json: Spark's main class, else the name, else the program."""
    owner: str | None = None
    """The job scope that submitted it (master/scopes.py); None: the cluster's operator."""


class ApplicationDescription(msgspec.Struct, forbid_unknown_fields=True):
    """An application: how to start its executors and how many resources they get.

    ``command`` may hold the placeholders {{EXECUTOR_ID}} {{APP_ID}} {{CORES}} {{HOSTNAME}}
    {{WORKER_URL}}, filled by the worker that launches each executor.
    """

    name: str
    command: Command
    memory_per_executor: Positive = 1024
    cores_per_executor: Positive | None = None
    """None: one executor per worker, with all the cores it can get (Spark's default)."""
    max_cores: Positive | None = None
    env: dict[str, str] = {}
    user: str = ""
    owner: str | None = None
    """The job scope that registered it (master/scopes.py); None: the cluster's operator."""


class ExecutorRef(msgspec.Struct):
    app_id: str
    exec_id: int


# Worker -> Master ---------------------------------------------------------------------------


class RegisterWorker(Message):
    id: str
    host: str
    port: int
    cores: int
    memory: int
    webui_url: str
    master_address: str


class Heartbeat(Message):
    worker_id: str


class WorkerStopping(Message):
    worker_id: str
    reason: str


class DriverStateChanged(Message):
    """One message for one change of a driver's state, all the way: its runner posts it to
    its worker (seq 0), the worker numbers it and sends it to the master, which acknowledges
    it with StateChangeAcked(seq); it is resent after a reconnect until it is."""

    seq: int
    driver_id: str
    state: DriverState
    message: str = ""
    exit_code: int | None = None


class ExecutorStateChanged(Message):
    """As DriverStateChanged, for one executor."""

    seq: int
    app_id: str
    exec_id: int
    state: ExecutorState
    message: str = ""
    exit_code: int | None = None


class WorkerLatestState(Message):
    """Sent after every (re)registration: what this worker runs right now."""

    worker_id: str
    executors: list[ExecutorRef]
    driver_ids: list[str]
    registration: int = 0
    """The RegisteredWorker.registration this report answers."""


# Master -> Worker ---------------------------------------------------------------------------


class RegisteredWorker(Message):
    master_url: str
    master_webui_url: str
    duplicate: bool
    heartbeat_interval: float
    registration: int = 0
    """Which registration of this worker this answers (the master counts them); the worker
    echoes it in the WorkerLatestState that follows, so a late report is told apart."""


class RegisterWorkerFailed(Message):
    message: str


class MasterInStandby(Message):
    pass


class ReconnectWorker(Message):
    master_url: str


class StateChangeAcked(Message):
    seq: int


class LaunchDriver(Message):
    driver_id: str
    desc: DriverDescription


class KillDriver(Message):
    driver_id: str


class LaunchExecutor(Message):
    master_url: str
    app_id: str
    exec_id: int
    desc: ApplicationDescription
    cores: int
    memory: int


class KillExecutor(Message):
    master_url: str
    app_id: str
    exec_id: int


class ApplicationFinished(Message):
    app_id: str


# Submission client <-> Master ---------------------------------------------------------------


class NotLeader(Message):
    """The answer of a master that does not lead (a standby, or one still recovering) to a
    client's request: it was not done here; ask the leader (the client tries the others)."""

    master_url: str
    state: str
    in_reply_to: int = 0


class RequestSubmitDriver(Message):
    desc: DriverDescription
    watch: bool = False
    """Also send a DriverStatusResponse on this connection at every state change."""
    request_id: int = 0
    """Echoed in the reply's in_reply_to: replies are matched by it, never by type."""


class SubmitDriverResponse(Message):
    success: bool
    driver_id: str | None
    message: str
    in_reply_to: int = 0
    """The request's request_id; 0 for a watch update, which answers no request."""


class RequestKillDriver(Message):
    driver_id: str
    request_id: int = 0
    """Echoed in the reply's in_reply_to: replies are matched by it, never by type."""


class KillDriverResponse(Message):
    driver_id: str
    success: bool
    message: str
    in_reply_to: int = 0
    """The request's request_id; 0 for a watch update, which answers no request."""


class RequestDriverStatus(Message):
    driver_id: str
    watch: bool = False
    """Keep sending DriverStatusResponse at every state change until a final state."""
    request_id: int = 0
    """Echoed in the reply's in_reply_to: replies are matched by it, never by type."""


class DriverStatusResponse(Message):
    driver_id: str
    found: bool
    state: DriverState | None = None
    worker_id: str | None = None
    worker_host_port: str | None = None
    message: str | None = None
    exit_code: int | None = None
    relaunched_as: str | None = None
    """Set when the driver's worker was lost and a supervised driver got this new id."""
    in_reply_to: int = 0
    """The request's request_id; 0 for a watch update, which answers no request."""


class RequestKillAllDrivers(Message):
    request_id: int = 0
    """Echoed in the reply's in_reply_to: replies are matched by it, never by type."""


class KillAllDriversResponse(Message):
    success: bool
    message: str
    in_reply_to: int = 0
    """The request's request_id; 0 for a watch update, which answers no request."""


class RequestClearCompletedDriversAndApps(Message):
    request_id: int = 0
    """Echoed in the reply's in_reply_to: replies are matched by it, never by type."""


class ClearCompletedDriversAndAppsResponse(Message):
    success: bool
    message: str
    in_reply_to: int = 0
    """The request's request_id; 0 for a watch update, which answers no request."""


class RequestDriverList(Message):
    request_id: int = 0
    """Echoed in the reply's in_reply_to: replies are matched by it, never by type."""
    scope: str | None = None
    """Only that job's driver and the drivers it submitted (set by the master on a job's
    connection, master/scopes.py)."""


class DriverListResponse(Message):
    drivers: list[DriverStatusResponse]
    in_reply_to: int = 0
    """The request's request_id; 0 for a watch update, which answers no request."""


class RequestKillApplication(Message):
    """The web UI's kill of an application: asked inside the master (Endpoint.ask), never
    decoded from a connection."""

    app_id: str
    request_id: int = 0


class KillApplicationResponse(Message):
    app_id: str
    success: bool
    message: str
    in_reply_to: int = 0


# Application client (driver program) <-> Master --------------------------------------------


class RegisterApplication(Message):
    desc: ApplicationDescription
    request_id: int = 0
    """Echoed in the reply's in_reply_to: replies are matched by it, never by type."""


class RegisteredApplication(Message):
    app_id: str
    master_url: str
    in_reply_to: int = 0
    """The request's request_id; 0 for a watch update, which answers no request."""


class UnregisterApplication(Message):
    app_id: str


class RequestLeadership(Message):
    """A client's check that its master still answers (and leads): a master that stops
    answering (frozen, or cut off with the connection still up) is left for the leader."""

    request_id: int = 0


class LeadershipResponse(Message):
    master_url: str
    state: str
    in_reply_to: int = 0


class ReconnectApplication(Message):
    """An application's driver program, its master gone, asks the (new) leader to take its
    application back: answered RegisteredApplication, or ApplicationRemoved if unknown."""

    app_id: str
    desc: ApplicationDescription
    request_id: int = 0


class ExecutorAdded(Message):
    exec_id: int
    worker_id: str
    host_port: str
    cores: int
    memory: int


class ExecutorUpdated(Message):
    exec_id: int
    state: ExecutorState
    message: str = ""
    exit_code: int | None = None
    worker_lost: bool = False


class WorkerRemoved(Message):
    worker_id: str
    host: str
    message: str


class ApplicationRemoved(Message):
    message: str
    in_reply_to: int = 0


# Master to itself (timers post these; they never cross the wire) ----------------------------


class CheckForWorkerTimeOut(Message):
    pass


class TryToLead(Message):
    """A standby tries again to become the leader (with a recovery mode)."""


class CompleteRecovery(Message):
    """The recovery timeout: workers that have not come back are lost."""


class CheckApplication(Message):
    """An application whose link was reset: FAILED now if its program has not come back."""

    app_id: str


# Worker to itself ---------------------------------------------------------------------------


class MasterConnected(Message):
    address: str


class SendHeartbeat(Message):
    pass


class CheckRegistration(Message):
    pass


class CleanupWorkDir(Message):
    pass


# Any endpoint to itself ---------------------------------------------------------------------


class ConnectionClosed(Message):
    reason: str
    reset: bool = False
    """The link was reset or aborted (a blip on the way), not closed by the peer (a process
    that closed it, or ended: its kernel closes its sockets)."""


TO_MASTER = (
    # from workers
    RegisterWorker
    | Heartbeat
    | WorkerStopping
    | DriverStateChanged
    | ExecutorStateChanged
    | WorkerLatestState
    # from clients: ember submit, drivers' applications, the REST server's own
    | RequestSubmitDriver
    | RequestKillDriver
    | RequestDriverStatus
    | RequestKillAllDrivers
    | RequestClearCompletedDriversAndApps
    | RequestDriverList
    | RegisterApplication
    | UnregisterApplication
    | ReconnectApplication
    | RequestLeadership
)
"""What a master accepts on a connection; anything else is refused when it is decoded."""

TO_WORKER = (
    RegisteredWorker
    | RegisterWorkerFailed
    | MasterInStandby
    | ReconnectWorker
    | StateChangeAcked
    | LaunchDriver
    | KillDriver
    | LaunchExecutor
    | KillExecutor
    | ApplicationFinished
)
"""What a worker accepts: only its master speaks to it."""

TO_CLIENT = (
    NotLeader
    | SubmitDriverResponse
    | KillDriverResponse
    | KillApplicationResponse  # today only answered inside the master (the web UI)
    | DriverStatusResponse
    | KillAllDriversResponse
    | ClearCompletedDriversAndAppsResponse
    | DriverListResponse
    | RegisteredApplication
    | LeadershipResponse
    | ExecutorAdded
    | ExecutorUpdated
    | WorkerRemoved
    | ApplicationRemoved
)
"""What a client accepts from the master: answers, and its application's events."""

MASTER_INTERNAL = (CheckForWorkerTimeOut | ConnectionClosed | TryToLead | CompleteRecovery
                   | CheckApplication | RequestKillApplication)
"""What the master posts to its own inbox (timers, a connection's end)."""

WORKER_INTERNAL = (
    MasterConnected
    | SendHeartbeat
    | CheckRegistration
    | CleanupWorkDir
    | DriverStateChanged
    | ExecutorStateChanged
    | ConnectionClosed
)
"""What the worker posts to its own inbox (timers, its runners' state changes, its links)."""
