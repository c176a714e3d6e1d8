"""TLS connections of one process share asyncio's read buffer (wire.py): many connections
receiving at once must each get exactly their own bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from pathlib import Path

from toolkit.ops.certs import Authority
from toolkit.runtime import wire


def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = Authority.create("t")
    issued = ca.issue(["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "cert.pem").write_bytes(issued.cert)
    (tmp_path / "key.pem").write_bytes(issued.key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(tmp_path / "ca.pem")
    return server, client


async def test_connections_receiving_at_once_each_get_their_own_bytes(tmp_path: Path) -> None:
    assert wire.TLS_READ_BUFFER < 1024 * 1024  # payloads span many reads of the buffer
    server_context, client_context = contexts(tmp_path)
    received: dict[bytes, str] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = await reader.readexactly(8)
        size = int.from_bytes(await reader.readexactly(4), "big")
        digest = hashlib.sha256()
        left = size
        while left:
            chunk = await reader.read(min(left, 7000))  # reads interleave between clients
            digest.update(chunk)
            left -= len(chunk)
        received[name] = digest.hexdigest()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    payloads = {f"client{n:02d}".encode()[:8]: os.urandom(1024 * 1024 + n) for n in range(8)}

    async def send(name: bytes, payload: bytes) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context,
                                                  server_hostname="127.0.0.1")
        writer.write(name + len(payload).to_bytes(4, "big"))
        for start in range(0, len(payload), 50_000):
            writer.write(payload[start:start + 50_000])
            await writer.drain()
        await writer.drain()
        writer.close()

    async with server:
        await asyncio.gather(*(send(name, data) for name, data in payloads.items()))
        for _ in range(200):
            if len(received) == len(payloads):
                break
            await asyncio.sleep(0.05)
    assert received == {name: hashlib.sha256(data).hexdigest()
                        for name, data in payloads.items()}
