"""Cluster secret, exposure rules and hostile input against real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from tests.procs import Cluster, ember, free_port, get_json, rss_kb, wait_for
from toolkit.errors import AuthError
from toolkit.runtime import messages as m
from toolkit.runtime import wire


def secret_file(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


SECRET = "correct-horse-battery-staple-0123456789"
OTHER = "another-secret-entirely-9876543210"


def test_matching_secrets_register(cluster: Cluster) -> None:
    key = secret_file(cluster.tmp / "secret", SECRET)
    master = cluster.master("--secret-file", key)
    worker = cluster.worker(master.url, "--secret-file", key)
    master.wait_state(worker.wait_registered()["id"], "ALIVE")


def test_secret_from_environment(cluster: Cluster) -> None:
    key = secret_file(cluster.tmp / "secret", SECRET)
    env = {"EMBER_SECRET_FILE": key}
    master = cluster.master(env=env)
    worker = cluster.worker(master.url, env=env)
    master.wait_state(worker.wait_registered()["id"], "ALIVE")
    # A worker without the secret is turned away by that master.
    stranger = cluster.worker(master.url)
    wait_for(lambda: "requires a cluster secret" in stranger.proc.log(), 10, "refusal")


def test_wrong_secret_is_rejected_and_never_logged(cluster: Cluster) -> None:
    master = cluster.master("--secret-file", secret_file(cluster.tmp / "a", SECRET))
    worker = cluster.worker(master.url, "--secret-file", secret_file(cluster.tmp / "b", OTHER))
    wait_for(lambda: "authentication failed" in master.proc.log(), 10, "master refusal")
    wait_for(lambda: "refused the handshake: authentication failed: wrong cluster secret"
             in worker.proc.log(), 10, "worker refusal")
    assert master.json()["workers"] == []
    for log in (master.proc.log(), worker.proc.log()):
        assert SECRET not in log
        assert OTHER not in log


def test_worker_with_secret_refuses_a_master_without_one(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, "--secret-file", secret_file(cluster.tmp / "s", SECRET))
    wait_for(lambda: "refusing an unauthenticated peer" in worker.proc.log(), 10, "refusal")
    assert master.json()["workers"] == []


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_secret_file_readable_by_others_is_refused(cluster: Cluster, mode: int) -> None:
    key = secret_file(cluster.tmp / "secret", SECRET, mode)
    master = cluster.master("--secret-file", key, wait=False)
    assert master.proc.wait() == 2
    assert f"secret file {key} has mode {mode:04o}" in master.proc.log()
    assert f"chmod 600 {key}" in master.proc.log()


def test_missing_secret_file_is_named(cluster: Cluster) -> None:
    missing = cluster.tmp / "nope"
    master = cluster.master("--secret-file", str(missing), wait=False)
    assert master.proc.wait() == 2
    assert f"secret file {missing}: No such file or directory" in master.proc.log()


@pytest.mark.parametrize("role", ["master", "worker"])
def test_non_loopback_without_secret_needs_insecure(cluster: Cluster, role: str) -> None:
    if role == "master":
        proc = cluster.master("--host", "0.0.0.0", wait=False, insecure=False).proc
    else:
        proc = cluster.worker("ember://127.0.0.1:7077", "--host", "0.0.0.0",
                              insecure=False).proc
    assert proc.wait() == 2
    assert f"{role} would listen on 0.0.0.0" in proc.log()
    assert "--secret-file" in proc.log() and "--insecure" in proc.log()


def test_without_a_secret_on_loopback_roles_use_their_users_own(cluster: Cluster) -> None:
    """No secret and no --insecure: master and worker make (0600) and use their user's own
    secret, and this user's clients find it; another user (another home) is refused, and so
    is a program that connects with no secret."""
    mine = {"EMBER_HOME": str(cluster.tmp / "mine")}
    master = cluster.master(env=mine, insecure=False)
    worker = cluster.worker(master.url, env=mine, insecure=False)
    master.wait_joined(worker)
    own = cluster.tmp / "mine" / "secret"
    assert own.stat().st_mode & 0o777 == 0o600
    assert f"made this user's own, {own}" in master.proc.log() + worker.proc.log()
    assert own.read_text().strip() not in master.proc.log() + worker.proc.log()
    listed = ember("driver", "list", "--master", master.url, env=mine)
    assert listed.returncode == 0, listed.stderr
    theirs = ember("driver", "list", "--master", master.url,
                   env={"EMBER_HOME": str(cluster.tmp / "theirs")})
    assert theirs.returncode != 0
    assert "requires a cluster secret and none is configured here" in theirs.stderr

    async def stranger() -> None:
        await wire.connect("127.0.0.1", master.port, None, wire.TO_CLIENT)

    with pytest.raises(AuthError, match="requires a cluster secret"):
        asyncio.run(stranger())


def test_insecure_allows_listening_on_all_addresses(cluster: Cluster) -> None:
    master = cluster.master("--host", "0.0.0.0", "--insecure", wait=False)
    wait_for(lambda: "Starting master at ember://0.0.0.0" in master.proc.log(), 10, "start")
    with socket.create_connection(("127.0.0.1", master.port), timeout=1):
        pass  # the RPC port accepts connections


# Hostile input ---------------------------------------------------------------------------


def raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


async def handshaken(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await wire.client_handshake(reader, writer, None)
    return reader, writer


async def send_after_handshake(port: int, data: bytes) -> bytes:
    reader, writer = await handshaken(port)
    writer.write(data)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return rest


BAD_AFTER_HANDSHAKE = {
    "oversized length prefix": (b"\x7f\xff\xff\xff", "exceeds the limit of 16777216 bytes"),
    "body that is not JSON": (frame(b"\x00\x01garbage{"), "not valid JSON"),
    "unknown message type": (frame(b'{"type":"FormatDisk","path":"/"}'),
                             "unknown message type 'FormatDisk'"),
    "message missing fields": (frame(b'{"type":"Heartbeat"}'), "invalid Heartbeat message"),
}


def test_each_bad_frame_closes_only_its_connection(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url)
    worker_id = worker.wait_registered()["id"]
    rss_before = rss_kb(master.proc.pid)

    for name, (data, logged) in BAD_AFTER_HANDSHAKE.items():
        rest = asyncio.run(send_after_handshake(master.port, data))
        assert rest == b"", name
        wait_for(lambda logged=logged: logged in master.proc.log(), 5, f"log of {name}")

    with raw_connect(master.port) as sock:  # a message before the handshake
        sock.sendall(frame(msgspec.json.encode(m.Heartbeat("worker-x"))))
        assert closed_by_peer(sock)
    wait_for(lambda: "expected Hello during the handshake, got 'Heartbeat'"
             in master.proc.log(), 5, "pre-handshake log")

    with raw_connect(master.port) as sock:  # a huge length before the handshake
        sock.sendall(b"\xff\xff\xff\xff")
        assert closed_by_peer(sock)
    wait_for(lambda: "frame of 4294967295 bytes exceeds the limit of 4096" in
             master.proc.log(), 5, "pre-handshake size log")

    # The cluster carried on: the worker is still ALIVE and heartbeating, memory did not balloon.
    time.sleep(0.5)
    assert master.worker_entry(worker_id)["state"] == "ALIVE"  # type: ignore[index]
    assert rss_kb(master.proc.pid) - rss_before < 10_000
    assert master.proc.popen.poll() is None


def test_silent_connection_is_dropped_after_the_handshake_timeout(cluster: Cluster) -> None:
    master = cluster.master()
    with raw_connect(master.port) as sock:
        sock.settimeout(wire.HANDSHAKE_TIMEOUT + 5)
        started = time.monotonic()
        assert closed_by_peer(sock)
        assert time.monotonic() - started >= wire.HANDSHAKE_TIMEOUT - 0.5
    assert "handshake timed out" in master.proc.log()


def test_same_address_as_a_live_worker_is_refused(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url)
    live = master.wait_state(worker.wait_registered()["id"], "ALIVE")

    async def impostor() -> m.Message:
        conn = await wire.connect("127.0.0.1", master.port, None, wire.TO_WORKER)
        conn.send(m.RegisterWorker("worker-other", "127.0.0.1", live["port"], 1, 512,
                                   "http://x", master.url))
        async for reply in conn.messages():
            conn.close()
            return reply
        raise AssertionError("no reply")

    reply = asyncio.run(impostor())
    assert reply == m.RegisterWorkerFailed(
        f"Attempted to re-register worker at same address: 127.0.0.1:{live['port']}")
    assert master.worker_entry(live["id"])["state"] == "ALIVE"  # type: ignore[index]


def test_busy_webui_port_is_reported(cluster: Cluster) -> None:
    master = cluster.master()
    busy = master.webui
    proc = cluster.worker(master.url, "--webui-port", str(busy)).proc
    assert proc.wait() == 1
    assert f"worker web UI cannot listen on 127.0.0.1:{busy}" in proc.log()


def test_the_master_sizes_its_limits_from_its_open_file_limit(cluster: Cluster) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the master inherits this
    try:
        master = cluster.master()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    raised = min(hard, 1 << 20)
    limits = Path(f"/proc/{master.proc.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    assert line.split()[3:5] == [str(raised), str(hard)]  # soft raised to the hard limit
    connections = raised - 64 - 2 * max(16, min(256, raised // 8))  # the HTTP ports' share
    assert (f"up to {connections} connections, {max(256, (raised - 64) // 4)} handshakes at "
            "once" in master.proc.log())


def test_connections_over_the_masters_limit_are_refused_and_named(cluster: Cluster) -> None:
    master = cluster.master("--max-connections", "2")
    assert "up to 2 connections" in master.proc.log()

    async def hold_two_then_try_a_third() -> bool:
        held = [await wire.connect("127.0.0.1", master.port, None, wire.TO_CLIENT)
                for _ in range(2)]
        try:
            with raw_connect(master.port) as sock:
                return closed_by_peer(sock)
        finally:
            for conn in held:
                conn.close()
                await conn.wait_closed(1.0)

    assert asyncio.run(hold_two_then_try_a_third())
    wait_for(lambda: "too many connections (limit 2)" in master.proc.log(), 5, "refusal log")
    # once they are gone, the next one is accepted again
    wait_for(lambda: asyncio.run(_handshakes(master.port)), 5, "a connection accepted again")


async def _handshakes(port: int) -> bool:
    conn = await wire.connect("127.0.0.1", port, None, wire.TO_CLIENT)
    conn.close()
    await conn.wait_closed(1.0)
    return True


def test_strangers_holding_every_pending_handshake_do_not_lock_out_known_peers(
        cluster: Cluster) -> None:
    """8 sources x 4 silent connections fill the strangers' pool; a peer that handshook
    before (here the host of a registered worker and of earlier clients) still gets in, and
    the refusals of one source are logged once, with a count, not once each."""
    master = cluster.master("--max-handshakes", "32", "--max-handshakes-per-host", "4")
    master.wait_joined(cluster.worker(master.url, cores=1, memory="512m"))
    silent = [socket.create_connection(("127.0.0.1", master.port), timeout=5,
                                       source_address=(f"127.0.0.{n}", 0))
              for n in range(2, 10) for _ in range(4)]
    try:
        time.sleep(0.3)  # all 32 pending
        for _ in range(30):  # a ninth stranger, again and again
            with socket.create_connection(("127.0.0.1", master.port), timeout=5,
                                          source_address=("127.0.0.10", 0)) as sock:
                sock.settimeout(5)
                assert closed_by_peer(sock)
        assert asyncio.run(_handshakes(master.port))  # from 127.0.0.1: known, let in
    finally:
        for sock in silent:
            sock.close()
    log = master.proc.log()
    refusals = [line for line in log.splitlines() if "from 127.0.0.10:" in line]
    assert len(refusals) == 1, refusals
    assert "pending handshakes from unknown peers (limit 32)" in refusals[0]


def test_idle_web_connections_cannot_take_the_files_the_rpc_port_needs(
        cluster: Cluster, tmp_path: Path) -> None:
    """A master limited to 256 open files; strangers open 300 idle connections to its web UI
    from 10 addresses. The web UI holds at most its share (256 / 8) and closes the rest at
    once; a submission over RPC still works, and /json still answers once they go."""
    if shutil.which("prlimit") is None:
        pytest.skip("needs prlimit (util-linux)")
    port, webui = free_port(), free_port()
    log = tmp_path / "master.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["prlimit", "--nofile=256:256", "--", sys.executable, "-m", "toolkit", "master",
             "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(webui)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    held: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{webui}/json"
        wait_for(lambda: get_json(url)["status"] == "ALIVE", 20, "the master")
        for n in range(300):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(
                    ("127.0.0.1", webui), timeout=5, source_address=(f"127.0.0.{2 + n % 10}", 0)))
        time.sleep(0.5)
        open_files = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert open_files < 128, open_files  # 32 held, the rest closed at once
        submitted = ember("submit", "--master", f"ember://127.0.0.1:{port}", "--", "true")
        assert submitted.returncode == 0, submitted.stderr  # waits: no worker, but accepted
        assert "too many connections (limit 32)" in log.read_text()
    finally:
        for sock in held:
            sock.close()
        proc.kill()
        proc.wait()


def test_with_a_secret_a_workers_json_does_not_show_executors_arguments(
        cluster: Cluster) -> None:
    """/json needs no login, and an argument may be a credential: with a cluster secret the
    worker shows each executor's program only."""
    from tests.integration.runtime.test_applications import app_desc
    from toolkit.runtime.client import ApplicationClient

    key = secret_file(cluster.tmp / "secret", SECRET)
    master = cluster.master("--secret-file", key)
    worker = cluster.worker(master.url, "--secret-file", key, cores=1)
    master.wait_joined(worker)

    async def with_an_executor() -> str:
        app = await ApplicationClient.register(app_desc(
            ["sh", "-c", "exec sleep 60", "--token=TOKEN-12345"], max_cores=1), master.url,
            secret=SECRET.encode())
        try:
            wait = asyncio.to_thread(wait_for, lambda: worker.json()["executors"], 15,
                                     "the executor on the worker")
            await wait
            return str(get_json(f"http://127.0.0.1:{worker.webui}/json"))
        finally:
            await app.stop()

    shown = asyncio.run(with_an_executor())
    assert "TOKEN-12345" not in shown
    assert "sh (arguments not shown)" in shown
