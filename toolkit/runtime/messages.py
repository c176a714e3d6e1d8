"""Every message of the runtime, grouped by direction.

Wire messages are msgspec structs tagged by their class name (the JSON field ``type``), so a
frame decodes straight into the right class and an unknown type is refused at decode time.
Commands are imperative (``ReconnectWorker``), events past tense, RPC pairs
``RequestX``/``XResponse``.
"""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, tag=True):
    """Base of every message; ``type`` on the wire is the class name."""


# Handshake (before any other message; see wire.py) ------------------------------------------


class Hello(Message):
    version: int
    nonce: str


class Challenge(Message):
    version: int
    nonce: str
    auth: bool


class Proof(Message):
    proof: str | None = None


class Welcome(Message):
    proof: str | None = None


class HandshakeFailed(Message):
    reason: str


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


# Master -> Worker ---------------------------------------------------------------------------


class RegisteredWorker(Message):
    master_url: str
    master_webui_url: str
    duplicate: bool
    heartbeat_interval: float


class RegisterWorkerFailed(Message):
    message: str


class MasterInStandby(Message):
    pass


class ReconnectWorker(Message):
    master_url: str


# Master to itself (timers post these; they never cross the wire) ----------------------------


class CheckForWorkerTimeOut(Message):
    pass


# Worker to itself ---------------------------------------------------------------------------


class MasterConnected(Message):
    address: str


class SendHeartbeat(Message):
    pass


class CheckRegistration(Message):
    pass


# Any endpoint to itself ---------------------------------------------------------------------


class ConnectionClosed(Message):
    reason: str


HANDSHAKE = Hello | Challenge | Proof | Welcome | HandshakeFailed

WIRE = (
    RegisterWorker
    | Heartbeat
    | WorkerStopping
    | RegisteredWorker
    | RegisterWorkerFailed
    | MasterInStandby
    | ReconnectWorker
)
"""The messages that may travel on an established connection."""
