"""An HTTP port's limits, with aiohttp behind the guard, on real loopback sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from toolkit.runtime import httpguard


async def serving(**limits: Any) -> tuple[web.AppRunner, asyncio.Server, int]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None, **httpguard.RUNNER_LIMITS)
    await runner.setup()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(httpguard.Guard(runner.server, "test", **limits),
                                      "127.0.0.1", 0)
    return runner, server, server.sockets[0].getsockname()[1]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except (TimeoutError, ConnectionError):
        return False


async def test_a_connection_that_never_finishes_its_headers_is_closed() -> None:
    runner, server, port = await serving(header_timeout=0.3)
    try:
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        fast_reader, fast = await asyncio.open_connection("127.0.0.1", port)
        fast.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in await asyncio.wait_for(fast_reader.readuntil(b"ok"), 2)
        assert await closed_within(slow_reader, 2)
        await asyncio.sleep(0.5)
        fast.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # past the deadline: still served
        assert b"200 OK" in await asyncio.wait_for(fast_reader.readuntil(b"ok"), 2)
        slow.close()
        fast.close()
    finally:
        server.close()
        await runner.cleanup()


async def test_connections_over_the_caps_are_closed_at_once() -> None:
    runner, server, port = await serving(connections=3, per_source=2)
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        third_reader, third = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_within(third_reader, 1)  # over the cap from one source
        other_reader, other = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0))
        other.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # another source: let in
        assert b"200 OK" in await asyncio.wait_for(other_reader.readline(), 2)
        fourth_reader, fourth = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.3", 0))
        assert await closed_within(fourth_reader, 1)  # over the port's cap
        fourth.close()
        for _, writer in held:
            writer.close()
        third.close()
        other.close()
    finally:
        server.close()
        await runner.cleanup()
