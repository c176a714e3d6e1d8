"""Framing, codec and the authenticated handshake, over in-memory streams."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.errors import AuthError
from toolkit.runtime import handshake as hs
from toolkit.runtime import messages as m
from toolkit.runtime import wire


def reader_with(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@given(st.text(), st.integers(0, 65535), st.integers(1, 1024), st.integers(1, 1 << 30))
def test_register_worker_round_trips(host: str, port: int, cores: int, memory: int) -> None:
    message = m.RegisterWorker("worker-1", host, port, cores, memory, "http://h:1", "h:2")
    frame = wire.encode_frame(message)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert wire.TO_MASTER.decode(frame[4:]) == message


def test_type_tag_is_the_class_name() -> None:
    assert msgspec.json.decode(wire.encode_frame(m.Heartbeat("w"))[4:]) == {
        "type": "Heartbeat", "worker_id": "w"}


@pytest.mark.parametrize(("body", "error"), [
    (b"{not json", "not valid JSON"),
    (b'{"type":"Nope"}', "unknown message type 'Nope'"),
    (b'{"worker_id":"w"}', "message has no type"),
    (b'{"type":"Heartbeat","worker_id":5}', "invalid Heartbeat message"),
    (b'{"type":"Hello","version":1,"nonce":"n"}', "unknown message type 'Hello'"),
    (b"[1,2]", "message has no type"),
])
def test_bad_bodies_name_the_problem(body: bytes, error: str) -> None:
    with pytest.raises(wire.BadMessage, match=error):
        wire.TO_MASTER.decode(body)


@pytest.mark.parametrize(("inbound", "message"), [
    (wire.TO_WORKER, m.RequestSubmitDriver(m.DriverDescription(["true"]))),
    (wire.TO_WORKER, m.RegisterWorker("w", "h", 1, 1, 1, "http://h:1", "h:2")),
    (wire.TO_MASTER, m.LaunchDriver("driver-1", m.DriverDescription(["true"]))),
    (wire.TO_CLIENT, m.KillDriver("driver-1")),
    (wire.TO_CLIENT, m.Heartbeat("w")),
])
def test_a_message_sent_the_wrong_way_is_refused_at_decode(inbound: wire.Inbound,
                                                           message: m.Message) -> None:
    body = wire.encode_frame(message)[4:]
    with pytest.raises(wire.BadMessage,
                       match=f"{type(message).__name__} is not a message a {inbound.role} "
                             f"accepts"):
        inbound.decode(body)


def test_every_message_on_the_wire_has_exactly_one_receiving_role() -> None:
    unions = {"master": m.TO_MASTER, "worker": m.TO_WORKER, "client": m.TO_CLIENT}
    owners: dict[str, list[str]] = {}
    for role, union in unions.items():
        for kind in union.__args__:
            owners.setdefault(kind.__name__, []).append(role)
    internal = {t.__name__ for t in (*m.MASTER_INTERNAL.__args__, *m.WORKER_INTERNAL.__args__)}
    handshake = {t.__name__ for t in hs.HANDSHAKE.__args__}
    every = {t.__name__ for t in m.Message.__subclasses__()}
    assert every == set(owners) | internal | handshake  # none is left without a direction
    assert {name: roles for name, roles in owners.items() if len(roles) > 1} == {}


async def test_oversized_frame_is_refused_before_reading_its_body() -> None:
    reader = reader_with((1 << 30).to_bytes(4, "big"))
    with pytest.raises(wire.FrameTooLarge, match="1073741824 bytes exceeds the limit of 100"):
        await wire.read_frame(reader, max_size=100)


def test_proofs_are_bound_to_their_side() -> None:
    server = wire.proof(b"s" * 16, b"ember-server", "a", "b")
    client = wire.proof(b"s" * 16, b"ember-client", "a", "b")
    assert server != client
    assert wire.proof_matches(server, server)
    assert not wire.proof_matches(server, client)
    assert not wire.proof_matches(server, None)


async def handshake(server_secret: bytes | None, client_secret: bytes | None
                    ) -> tuple[BaseException | None, BaseException | None]:
    """Run both sides of the handshake over a local socket pair; return what each raised."""
    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await wire.server_handshake(reader, writer, server_secret)
        except BaseException as exc:
            results["server"] = exc
        finally:
            writer.close()

    results: dict[str, BaseException | None] = {"server": None, "client": None}
    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await wire.client_handshake(reader, writer, client_secret)
    except BaseException as exc:
        results["client"] = exc
    writer.close()
    await asyncio.sleep(0.05)
    server.close()
    return results["server"], results["client"]


async def test_handshake_with_the_same_secret_succeeds() -> None:
    assert await handshake(b"k" * 32, b"k" * 32) == (None, None)


async def test_handshake_without_secrets_succeeds() -> None:
    assert await handshake(None, None) == (None, None)


async def test_wrong_secret_fails_on_both_sides_and_names_no_secret() -> None:
    server_error, client_error = await handshake(b"k" * 32, b"x" * 32)
    assert isinstance(server_error, AuthError)
    assert str(server_error) == "authentication failed: wrong cluster secret"
    assert isinstance(client_error, AuthError)
    assert "peer refused the handshake: authentication failed" in str(client_error)
    for error in (server_error, client_error):
        assert "k" * 32 not in str(error) and "x" * 32 not in str(error)


async def test_stranger_gets_nothing_derived_from_the_secret() -> None:
    """The server proves itself only after the client did: no offline guessing oracle."""
    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises(AuthError):
            await wire.server_handshake(reader, writer, b"k" * 32)
        writer.close()

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1",
                                                   server.sockets[0].getsockname()[1])
    writer.write(wire.encode_frame(hs.Hello(wire.PROTOCOL_VERSION, "chosen-nonce")))
    await writer.drain()
    challenge = msgspec.json.decode(await wire.read_frame(reader, 4096))
    assert set(challenge) == {"type", "version", "nonce", "auth"} and challenge["auth"]
    writer.write(wire.encode_frame(hs.Proof("f" * 64)))
    await writer.drain()
    refusal = msgspec.json.decode(await wire.read_frame(reader, 4096))
    assert refusal == {"type": "HandshakeFailed",
                       "reason": "authentication failed: wrong cluster secret"}
    writer.close()
    server.close()


async def test_client_detects_a_server_that_fakes_its_welcome() -> None:
    """Mutual: a server that accepts any proof but cannot prove the secret is refused."""
    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire.read_frame(reader, 4096)
        writer.write(wire.encode_frame(hs.Challenge(wire.PROTOCOL_VERSION, "n", True)))
        await wire.read_frame(reader, 4096)
        writer.write(wire.encode_frame(hs.Welcome("0" * 64)))
        await writer.drain()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1",
                                                   server.sockets[0].getsockname()[1])
    with pytest.raises(AuthError, match="the peer does not know the cluster secret"):
        await wire.client_handshake(reader, writer, b"k" * 32)
    writer.close()
    server.close()


async def test_client_without_secret_is_refused_by_a_server_with_one() -> None:
    _, client_error = await handshake(b"k" * 32, None)
    assert isinstance(client_error, AuthError)
    assert "requires a cluster secret" in str(client_error)


async def test_client_with_secret_refuses_a_server_without_one() -> None:
    _, client_error = await handshake(None, b"k" * 32)
    assert isinstance(client_error, AuthError)
    assert "refusing an unauthenticated peer" in str(client_error)


async def test_version_mismatch_is_refused_with_a_reason() -> None:
    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises(AuthError, match="protocol version 99 is not supported"):
            await wire.server_handshake(reader, writer, None)
        writer.close()

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1",
                                                   server.sockets[0].getsockname()[1])
    writer.write(wire.encode_frame(hs.Hello(99, "n")))
    await writer.drain()
    body = await wire.read_frame(reader, 4096)
    assert msgspec.json.decode(body)["type"] == "HandshakeFailed"
    writer.close()
    server.close()


async def test_an_aborted_connection_is_a_reset_to_its_peer_and_a_closed_one_is_not() -> None:
    """A client leaving a master it gave up on aborts: the master must see a blip (its
    applications wait), never the FIN of a program that ended (they fail)."""
    seen: list[bool] = []

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = await wire.accept(reader, writer, None, wire.TO_MASTER)
        async for _ in conn.messages():
            pass
        seen.append(conn.reset)

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for leave in ("abort", "close"):
            conn = await wire.connect("127.0.0.1", port, None, wire.TO_CLIENT)
            getattr(conn, leave)()
            for _ in range(100):
                if len(seen) == ("abort", "close").index(leave) + 1:
                    break
                await asyncio.sleep(0.02)
    finally:
        server.close()
    assert seen == [True, False]


async def test_a_peer_that_stops_reading_holds_neither_memory_nor_its_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that pipelines and never reads: what it is sent waits in the bounded queue,
    not in an ever larger transport buffer; closed, its socket is freed all the same."""
    monkeypatch.setattr(wire, "CLOSE_GRACE", 0.5, raising=False)
    accepted: asyncio.Queue[wire.Connection] = asyncio.Queue()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(await wire.accept(reader, writer, None, wire.TO_MASTER))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await wire.connect("127.0.0.1", port, None, wire.TO_CLIENT)  # never reads
    try:
        conn = await accepted.get()
        big = m.DriverStatusResponse("driver-1", True, message="x" * 65536)
        for _ in range(400):  # 26 MB, far more than the kernel buffers hold
            conn.send(big)
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        assert conn._writer.transport.get_write_buffer_size() <= 4 * 65536
        conn.close()
        await asyncio.wait({conn._write_task}, timeout=5)
        assert conn._write_task.done() and conn._writer.transport.is_closing()  # freed, unread
    finally:
        client.abort()
        server.close()


async def test_a_link_whose_send_queue_overflows_is_a_reset_not_a_peer_that_ended(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "SEND_QUEUE_LIMIT", 5)
    accepted: asyncio.Queue[wire.Connection] = asyncio.Queue()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(await wire.accept(reader, writer, None, wire.TO_MASTER))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await wire.connect("127.0.0.1", port, None, wire.TO_CLIENT)
    try:
        conn = await accepted.get()
        sent = [conn.send(m.DriverStatusResponse("driver-1", True)) for _ in range(10)]
        assert False in sent and conn.closed
        assert conn.reset  # the master keeps the worker's work: it will reconnect
    finally:
        client.abort()
        server.close()
