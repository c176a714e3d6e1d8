"""Framing, codec, handshake and authentication. The wire format lives here and nowhere else.

A frame is a 4-byte big-endian length followed by a JSON body. A connection starts with a
handshake: the client sends ``Hello(version, nonce)``; the server answers ``Challenge`` with its
own nonce and whether it requires the cluster secret; the client sends its proof; the server
checks it and answers ``HandshakeFailed``, or ``Welcome`` carrying its own proof, which the
client checks in turn. A proof is HMAC-SHA256(secret, label | client nonce | server nonce),
with a different label per side so one side's proof can never be replayed as the other's.
The client proves first, so a stranger who connects learns nothing it could use to guess the
secret offline. Proofs are compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
from asyncio import sslproto
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec

from toolkit.errors import AuthError, WireError
from toolkit.runtime import handshake as hs
from toolkit.runtime import messages as m
from toolkit.runtime.keys import Keys, as_keys, key_id, peer_identity

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_FRAME = 16 * 1024 * 1024
HANDSHAKE_MAX_FRAME = 4096
HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
SEND_QUEUE_LIMIT = 10_000
CLOSE_GRACE = 5.0
"""Seconds a closed connection gets to hand its queued messages to a peer that reads slowly;
one that does not read by then is aborted (its socket freed)."""

TLS_READ_BUFFER = 32 * 1024
"""asyncio reads each TLS connection through a buffer of its own, 256 KiB in Python 3.11: a
master with 5,000 workers held 1.3 GB in them alone (bench/scale.py --tls). A TLS record
carries at most 16 KiB, so a smaller buffer costs no extra reads of the socket."""
sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
_read_buffers = threading.local()


def _shared_read_buffer(self: Any, n: int) -> memoryview:
    """One read buffer per thread for all its TLS connections, not one per connection (32 KiB
    each: 160 MB at 5,000 workers). asyncio copies what the socket gave into the connection's
    own BIO (buffer_updated) right after reading into it, in the same thread, so connections
    never see each other's bytes."""
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(TLS_READ_BUFFER))
    self._ssl_buffer_view = view
    return view


def _share_read_buffers() -> None:
    """Python 3.11's SSLProtocol reads the socket into the view get_buffer() returns, kept in
    _ssl_buffer_view, which buffer_updated() copies into the connection's BIO at once."""
    proto = sslproto.SSLProtocol
    if sys.version_info[:2] != (3, 11) or not hasattr(proto, "get_buffer"):
        return  # another asyncio: its own buffers, unchanged
    original_init = proto.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._ssl_buffer = b""  # its own buffer, made by __init__, goes
        self._ssl_buffer_view = memoryview(b"")

    proto.__init__ = init  # type: ignore[method-assign]
    proto.get_buffer = _shared_read_buffer  # type: ignore[method-assign]


_share_read_buffers()

_HEADER = 4
_encoder = msgspec.json.Encoder()
_handshake_decoder = msgspec.json.Decoder(hs.HANDSHAKE)
_KNOWN = frozenset(t.__name__ for union in (m.TO_MASTER, m.TO_WORKER, m.TO_CLIENT)
                   for t in union.__args__)

T = TypeVar("T", bound=m.Message)


class FrameTooLarge(WireError):
    pass


class BadMessage(WireError):
    pass


# Codec ------------------------------------------------------------------------------------


def encode_frame(message: m.Message) -> bytes:
    body = _encoder.encode(message)
    return len(body).to_bytes(_HEADER, "big") + body


class Inbound:
    """What one role accepts on a connection (a union of messages.py), and its decoder: a
    message meant for another role is refused when it is decoded, never handled."""

    def __init__(self, role: str, accepted: Any) -> None:
        self.role = role
        self.names = frozenset(t.__name__ for t in accepted.__args__)
        self._accepted = accepted
        self._decoder: msgspec.json.Decoder[Any] | None = None  # built by its first use:
        # a process decodes for one role only, and each decoder costs memory

    def decode(self, body: bytes) -> m.Message:
        """One established-connection message; BadMessage names what is wrong."""
        if self._decoder is None:
            self._decoder = msgspec.json.Decoder(self._accepted)
        try:
            message: m.Message = self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise BadMessage(self._describe_invalid(body, exc)) from None
        except msgspec.DecodeError as exc:
            raise BadMessage(f"body is not valid JSON ({exc})") from None
        return message

    def _describe_invalid(self, body: bytes, exc: msgspec.ValidationError) -> str:
        try:
            kind = msgspec.json.decode(body).get("type")
        except (msgspec.DecodeError, AttributeError):
            kind = None
        if kind is None:
            return f"message has no type ({exc})"
        if kind in _KNOWN and kind not in self.names:
            return f"{kind} is not a message a {self.role} accepts"
        if kind not in _KNOWN:
            return f"unknown message type {str(kind)[:64]!r}"
        return f"invalid {kind} message ({exc})"


TO_MASTER = Inbound("master", m.TO_MASTER)
TO_WORKER = Inbound("worker", m.TO_WORKER)
TO_CLIENT = Inbound("client", m.TO_CLIENT)


async def read_frame(reader: asyncio.StreamReader, max_size: int) -> bytes:
    """Read one frame. A length over ``max_size`` is refused before any body is read."""
    header = await reader.readexactly(_HEADER)
    size = int.from_bytes(header, "big")
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_size} bytes")
    return await reader.readexactly(size)


# Authentication ------------------------------------------------------------------------------


def proof(secret: bytes, label: bytes, client_nonce: str, server_nonce: str) -> str:
    mac = hmac.new(secret, label + b"|" + client_nonce.encode() + b"|" + server_nonce.encode(),
                   hashlib.sha256)
    return mac.hexdigest()


def proof_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


REST_TOKEN_TTL = 3600
"""Seconds a REST token minted by `ember rest-token` is valid by default."""


def rest_token(secret: bytes, ttl: float = REST_TOKEN_TTL, now: float | None = None) -> str:
    """A bearer token of the master's REST API, valid for ``ttl`` seconds: ``v2.<expiry>.<hex
    HMAC-SHA256 of the expiry, keyed by the secret>``. Derived from the cluster secret (no
    second secret to distribute); one that is sniffed is good only until it expires."""
    expires = int((time.time() if now is None else now) + ttl)
    return f"v2.{expires}.{_rest_mac(secret, expires)}"


def _rest_mac(secret: bytes, expires: int) -> str:
    return hmac.new(secret, b"ember-rest-token-v2\0" + str(expires).encode(),
                    hashlib.sha256).hexdigest()


def rest_token_error(secrets: bytes | tuple[bytes, ...], token: str,
                     now: float | None = None) -> str | None:
    """Why ``token`` is not a valid REST token now for any of ``secrets`` (while a rotation
    runs, a token of either secret is good), or None if it is."""
    version, _, rest = token.partition(".")
    expiry, _, mac = rest.partition(".")
    if version != "v2" or not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12) \
            or not mac:
        return "not a token of this cluster (mint one with `ember rest-token`)"
    given = mac.encode("utf-8", "surrogateescape")
    keys = (secrets,) if isinstance(secrets, bytes) else secrets
    if not any(hmac.compare_digest(given, _rest_mac(s, int(expiry)).encode()) for s in keys):
        return "wrong token"
    if int(expiry) <= (time.time() if now is None else now):
        return "expired token (mint another with `ember rest-token`)"
    return None


_SERVER = b"ember-server"
_CLIENT = b"ember-client"


# Connections ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Proven:
    """What the peer of a connection proved."""

    scope: str | None = None
    """A job's scope (keys.py); None for a holder of the cluster secret, or no secret."""
    key: str | None = None
    """The key_id of the key proved (None without a secret)."""
    hosts: frozenset[str] = frozenset()
    """The names and addresses in the peer's TLS certificate, verified by the cluster CA."""
    issuer: Any = None
    """The CA that issued the peer's certificate."""


PLAIN = Proven()


class Connection:
    """One established, authenticated connection: a reader and a queued writer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str,
                 accepts: Inbound, max_frame: int = MAX_FRAME, proven: Proven = PLAIN) -> None:
        self.peer = peer
        self.proven = proven
        self.accepts = accepts
        self.reset = False
        """The peer's side was reset or aborted rather than closed."""
        self.max_frame = max_frame
        self.closed = False
        self._reader = reader
        self._writer = writer
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._write_task = asyncio.create_task(self._write_loop(), name=f"write {peer}")

    def __repr__(self) -> str:
        return f"<Connection {self.peer}{' closed' if self.closed else ''}>"

    def send(self, message: m.Message) -> bool:
        """Queue a message; False if the connection is closed (the message is dropped)."""
        if self.closed:
            return False
        if self._queue.qsize() >= SEND_QUEUE_LIMIT:
            logger.warning("closing connection to %s: send queue full", self.peer)
            self.reset = True  # a link that fell behind, not a peer that ended: work is kept
            self.close()
            return False
        self._queue.put_nowait(encode_frame(message))
        return True

    def close(self) -> None:
        """Send what is queued, then close; within CLOSE_GRACE seconds, whether the peer
        reads or not."""
        if self.closed:
            return
        self.closed = True
        self._queue.put_nowait(None)
        with contextlib.suppress(RuntimeError):  # no loop running: nothing left to wait for
            asyncio.get_running_loop().call_later(CLOSE_GRACE, self._force_close)

    def _force_close(self) -> None:
        transport = self._writer.transport
        stuck = not self._write_task.done() or transport.get_write_buffer_size() > 0
        if stuck:
            logger.warning("closing connection to %s: it has not read what it was sent in "
                           "%g s", self.peer, CLOSE_GRACE)
        if stuck or not transport.is_closing():
            transport.abort()
            self._write_task.cancel()

    def abort(self) -> None:
        """Drop the connection at once, unsent messages too, with a reset (SO_LINGER 0: an
        RST, not a FIN): the peer sees a blip, never a process that ended. For a peer that
        stopped answering, whose unread data would keep a graceful close waiting."""
        self.close()
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    async def wait_closed(self, timeout: float = 2.0) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._write_task), timeout)
        except TimeoutError:
            self._write_task.cancel()

    async def messages(self) -> AsyncIterator[m.Message]:
        """Yield decoded messages until EOF; raise WireError on a frame that breaks the protocol."""
        try:
            while not self.closed:
                body = await read_frame(self._reader, self.max_frame)
                yield self.accepts.decode(body)
        except (asyncio.IncompleteReadError, OSError) as exc:
            if isinstance(exc, WireError):
                raise
            self.reset = self.reset or isinstance(exc, (ConnectionResetError,
                                                        ConnectionAbortedError, TimeoutError))
            return

    async def _write_loop(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                if frame is None:
                    break
                self._writer.write(frame)
                # every time: a peer that does not read leaves what it was sent in the queue
                # (bounded by SEND_QUEUE_LIMIT), not in an ever larger transport buffer
                await self._writer.drain()
        except (ConnectionError, OSError):
            self.closed = True
        finally:
            self._writer.close()


# Handshake -----------------------------------------------------------------------------------


async def _send_raw(writer: asyncio.StreamWriter, message: m.Message) -> None:
    writer.write(encode_frame(message))
    await writer.drain()


async def _expect(reader: asyncio.StreamReader, kind: type[T]) -> T:
    body = await read_frame(reader, HANDSHAKE_MAX_FRAME)
    try:
        message = _handshake_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        message = None
    if isinstance(message, hs.HandshakeFailed):
        raise AuthError(f"peer refused the handshake: {message.reason}")
    if not isinstance(message, kind):
        raise BadMessage(f"expected {kind.__name__} during the handshake, got "
                         f"{_describe_handshake(body)}")
    return message


def _describe_handshake(body: bytes) -> str:
    try:
        kind = msgspec.json.decode(body).get("type")
    except (msgspec.DecodeError, AttributeError):
        return "a body that is not a JSON object"
    return f"{str(kind)[:64]!r}" if kind else "a message with no type"


async def server_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           keys: Keys | bytes | None) -> Proven:
    """Run the server side of the handshake; raise WireError/AuthError to refuse the peer.
    Return what the peer proved: its scope (a job's) and the key it used."""
    keys = as_keys(keys)
    hello = await _expect(reader, hs.Hello)
    if hello.version != PROTOCOL_VERSION:
        reason = f"protocol version {hello.version} is not supported (this is {PROTOCOL_VERSION})"
        await _refuse(writer, reason)
        raise AuthError(reason)
    nonce = secrets.token_hex(32)
    await _send_raw(writer, hs.Challenge(PROTOCOL_VERSION, nonce, keys.secret is not None))
    answer = await _expect(reader, hs.Proof)
    if keys.secret is None:
        if hello.scope:
            await _refuse(writer, "this cluster has no secret, hence no job credentials")
            raise AuthError("authentication failed: a job credential, and no cluster secret")
        await _send_raw(writer, hs.Welcome())
        return Proven()
    if answer.proof is None:
        await _refuse(writer, "this cluster requires a secret")
        raise AuthError("authentication failed: peer sent no proof (no secret configured?)")
    for key in keys.accepted(hello.scope):
        if proof_matches(proof(key, _CLIENT, hello.nonce, nonce), answer.proof):
            break
    else:
        what = "job credential" if hello.scope else "cluster secret"
        await _refuse(writer, f"authentication failed: wrong {what}")
        raise AuthError(f"authentication failed: wrong {what}")
    await _send_raw(writer, hs.Welcome(proof(key, _SERVER, hello.nonce, nonce)))
    return Proven(hello.scope or None, key_id(key))


async def client_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           keys: Keys | bytes | None) -> Proven:
    """Run the client side: prove the secret (or a job's scoped key), then check the
    server's proof."""
    keys = as_keys(keys)
    secret = keys.secret
    nonce = secrets.token_hex(32)
    await _send_raw(writer, hs.Hello(PROTOCOL_VERSION, nonce, keys.scope))
    challenge = await _expect(reader, hs.Challenge)
    if challenge.auth and secret is None:
        secret = keys.fallback_secret()
    if challenge.auth and secret is None:
        await _refuse(writer, "no secret configured")
        where = f" (nor in {keys.fallback})" if keys.fallback else ""
        raise AuthError(f"the peer requires a cluster secret and none is configured here"
                        f"{where}")
    if secret is not None and not challenge.auth:
        await _refuse(writer, "a secret is required")
        raise AuthError("the peer has no cluster secret; refusing an unauthenticated peer")
    my_proof = proof(secret, _CLIENT, nonce, challenge.nonce) if secret else None
    await _send_raw(writer, hs.Proof(my_proof))
    welcome = await _expect(reader, hs.Welcome)
    if secret is not None and not proof_matches(proof(secret, _SERVER, nonce, challenge.nonce),
                                                welcome.proof):
        raise AuthError("authentication failed: the peer does not know the cluster secret")
    return Proven(keys.scope, key_id(secret) if secret else None)


async def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await _send_raw(writer, hs.HandshakeFailed(reason))


def peer_name(writer: asyncio.StreamWriter) -> str:
    info: Any = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        host = f"[{info[0]}]" if ":" in str(info[0]) else info[0]
        return f"{host}:{info[1]}"
    return str(info)


async def _start_tls(writer: asyncio.StreamWriter, keys: Keys) -> tuple[frozenset[str], Any]:
    """Turn an accepted connection into TLS (after admission: a stranger's TLS handshake
    counts against the same limits and timeout as the rest of the handshake)."""
    if keys.tls is None:
        return frozenset(), None
    await writer.start_tls(keys.tls.server)
    return peer_identity(writer.get_extra_info("peercert"))


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 keys: Keys | bytes | None, accepts: Inbound, max_frame: int = MAX_FRAME
                 ) -> Connection:
    """Handshake (TLS first, when configured) an inbound connection within
    HANDSHAKE_TIMEOUT and wrap it."""
    keys = as_keys(keys)
    peer = peer_name(writer)

    async def _handshake() -> Proven:
        hosts, issuer = await _start_tls(writer, keys)
        proven = await server_handshake(reader, writer, keys)
        return dataclasses.replace(proven, hosts=hosts, issuer=issuer)

    try:
        proven = await asyncio.wait_for(_handshake(), HANDSHAKE_TIMEOUT)
    except TimeoutError:
        writer.close()
        raise WireError("handshake timed out") from None
    except (WireError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
        writer.close()
        if isinstance(exc, WireError):
            raise
        if isinstance(exc, ssl.SSLError):
            raise WireError(f"TLS handshake failed ({exc.reason or exc})") from None
        lost = exc.__class__.__name__
        raise WireError(f"connection lost during the handshake ({lost})") from None
    return Connection(reader, writer, peer, accepts, max_frame, proven)


async def connect(host: str, port: int, keys: Keys | bytes | None, accepts: Inbound,
                  timeout: float = CONNECT_TIMEOUT, max_frame: int = MAX_FRAME) -> Connection:
    """Open, handshake and wrap an outbound connection; raise OSError or WireError. With
    TLS, the server's certificate must be the cluster CA's and name ``host``."""
    keys = as_keys(keys)

    async def _open() -> Connection:
        tls = keys.tls.client if keys.tls is not None else None
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None)
        except ssl.SSLCertVerificationError as exc:
            raise WireError(f"{host}:{port} is not a host of this cluster: "
                            f"{exc.verify_message or exc}") from None
        except ssl.SSLError as exc:
            raise WireError(f"TLS with {host}:{port} failed ({exc.reason or exc})") from None
        try:
            proven = await client_handshake(reader, writer, keys)
        except BaseException:
            writer.close()
            raise
        hosts, issuer = peer_identity(writer.get_extra_info("peercert"))
        proven = dataclasses.replace(proven, hosts=hosts, issuer=issuer)
        return Connection(reader, writer, f"{host}:{port}", accepts, max_frame, proven)

    try:
        return await asyncio.wait_for(_open(), timeout)
    except TimeoutError:
        raise WireError(f"connecting to {host}:{port} timed out after {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        raise WireError(f"{host}:{port} closed the connection during the handshake") from None
