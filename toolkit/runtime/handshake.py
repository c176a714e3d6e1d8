"""The handshake's messages: the first frames on every connection, before any other (wire.py).

The client sends ``Hello``, the server a ``Challenge``; the client's ``Proof`` is answered with
``Welcome`` or ``HandshakeFailed``. They are decoded by their own decoder with a small frame
limit, so a stranger never reaches the decoders of the runtime's messages.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from toolkit.runtime.messages import Message


class Hello(Message):
    version: int
    nonce: str
    scope: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    """A job's scope (keys.py): it proves a key derived for that scope, not the secret."""


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


HANDSHAKE = Hello | Challenge | Proof | Welcome | HandshakeFailed
