"""The Worker's handlers and its registration backoff, without sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.runtime.fakes import Clock, FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime.registration import REGISTER_MAX_DELAY, registration_delay, worker_id
from toolkit.runtime.worker import REFUSED_RETRY, Worker, WorkerConfig


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(clock: Clock, tmp_path: Path) -> Worker:
    config = WorkerConfig(masters=(("10.0.0.1", 7077), ("10.0.0.9", 7077)), host="10.0.0.2",
                          cores=2, memory=1024, work_dir=tmp_path, port=4000,
                          register_timeout=30)
    w = Worker(config, clock=clock, monotonic=clock)
    w.id = "worker-1"
    return w


def test_first_retry_is_sub_second_and_every_delay_is_capped() -> None:
    assert registration_delay(1, lambda: 0.0) == pytest.approx(0.05)
    assert registration_delay(1, lambda: 0.999) < 0.1
    delays = [registration_delay(n, lambda: 1.0) for n in range(1, 30)]
    assert delays == sorted(delays)
    assert max(delays) == REGISTER_MAX_DELAY


def test_jitter_spreads_workers_apart() -> None:
    assert registration_delay(5, lambda: 0.0) == REGISTER_MAX_DELAY / 2
    assert registration_delay(5, lambda: 1.0) == REGISTER_MAX_DELAY


def test_worker_id_has_spark_shape() -> None:
    assert worker_id("h1", 4000, 0).startswith("worker-19700101")
    assert worker_id("h1", 4000, 0).endswith("-h1-4000")


def test_connected_master_gets_a_registration(worker: Worker) -> None:
    conn = FakeConn()
    worker.handle(m.MasterConnected("10.0.0.1:7077"), conn)
    assert conn.last() == m.RegisterWorker("worker-1", "10.0.0.2", 4000, 2, 1024,
                                           "http://10.0.0.2:8081", "10.0.0.1:7077")


async def test_first_master_to_accept_wins_and_the_other_link_is_dropped(worker: Worker) -> None:
    first, second = FakeConn(), FakeConn()
    worker.handle(m.MasterConnected("10.0.0.1:7077"), first)
    worker.handle(m.MasterConnected("10.0.0.9:7077"), second)
    worker.handle(m.RegisteredWorker("ember://10.0.0.9:7077", "http://10.0.0.9:8080", False,
                                     15.0), second)
    assert worker.registered and worker.master is second
    assert first.closed and not second.closed
    worker.handle(m.RegisteredWorker("ember://10.0.0.1:7077", "http://x", False, 15.0), first)
    assert worker.master is second and worker.master_url == "ember://10.0.0.9:7077"
    await worker.close_tasks()


async def test_heartbeat_goes_to_the_active_master_only_when_registered(worker: Worker) -> None:
    conn = FakeConn()
    worker.handle(m.SendHeartbeat())
    worker.handle(m.MasterConnected("10.0.0.1:7077"), conn)
    worker.handle(m.RegisteredWorker("ember://10.0.0.1:7077", "http://x", False, 15.0), conn)
    worker.handle(m.SendHeartbeat())
    assert conn.last() == m.Heartbeat("worker-1")
    await worker.close_tasks()


async def test_reconnect_request_re_registers_on_the_same_link(worker: Worker) -> None:
    conn = FakeConn()
    worker.handle(m.MasterConnected("10.0.0.1:7077"), conn)
    worker.handle(m.RegisteredWorker("ember://10.0.0.1:7077", "http://x", False, 15.0), conn)
    worker.handle(m.ReconnectWorker("ember://10.0.0.1:7077"), conn)
    assert not worker.registered
    assert isinstance(conn.last(), m.RegisterWorker)
    await worker.close_tasks()


def registered_with(worker: Worker, address: str) -> FakeConn:
    conn = FakeConn(address)
    worker.handle(m.MasterConnected(address), conn)
    worker.handle(m.RegisteredWorker(f"ember://{address}", "http://x", False, 15.0), conn)
    return conn


async def test_a_new_leaders_word_drops_a_silent_master_for_it(worker: Worker) -> None:
    """MasterChanged: the old master froze or was cut off with the link still up."""
    old = registered_with(worker, "10.0.0.1:7077")
    word = FakeConn("10.0.0.9:40000")  # the new leader's own connection to this worker
    worker.handle(m.ReconnectWorker("ember://10.0.0.9:7077"), word)
    assert word.closed and old.aborted
    assert not worker.registered and worker.master is None
    assert "10.0.0.9:7077" in worker._links  # connecting to the new leader
    await worker.close_tasks()


async def test_only_its_own_masters_can_say_they_lead(worker: Worker) -> None:
    current = registered_with(worker, "10.0.0.1:7077")
    # a stranger; its current master; the other master, but said from elsewhere; garbage
    for url in ("ember://10.6.6.6:7077", "ember://10.0.0.1:7077", "ember://10.0.0.9:7077",
                "not a url"):
        worker.handle(m.ReconnectWorker(url), FakeConn("10.6.6.6:40000"))
        assert worker.registered and worker.master is current and not current.closed
    await worker.close_tasks()


async def test_refused_registration_is_asked_again_later(worker: Worker) -> None:
    conn = FakeConn()
    worker.handle(m.MasterConnected("10.0.0.1:7077"), conn)
    worker.handle(m.RegisterWorkerFailed("Attempted to re-register worker at same address"),
                  conn)
    assert not worker.stopped.is_set()
    assert len(conn.sent) == 1
    message, again = await asyncio.wait_for(worker._inbox.get(), REFUSED_RETRY + 1)
    assert (message, again) == (m.MasterConnected("10.0.0.1:7077"), conn)


async def test_gives_up_after_the_register_timeout(worker: Worker, clock: Clock) -> None:
    clock.now += 30
    worker.handle(m.CheckRegistration())
    assert not worker.stopped.is_set()
    clock.now += 1
    worker.handle(m.CheckRegistration())
    assert worker.stopped.is_set() and worker.exit_code == 1


async def test_losing_the_master_restarts_the_timeout_clock(worker: Worker, clock: Clock) -> None:
    conn = FakeConn()
    worker.handle(m.MasterConnected("10.0.0.1:7077"), conn)
    worker.handle(m.RegisteredWorker("ember://10.0.0.1:7077", "http://x", False, 15.0), conn)
    clock.now += 100
    worker.handle(m.ConnectionClosed("reset"), conn)
    assert not worker.registered and worker.master is None
    clock.now += 29
    worker.handle(m.CheckRegistration())
    assert not worker.stopped.is_set()
    await worker.close_tasks()


async def test_a_connection_someone_opened_to_the_worker_cannot_become_its_master(
        worker: Worker) -> None:
    """A job holding the secret connects to the worker's port: it can neither answer a
    registration nor, so, give orders (LaunchDriver) as if it were the master."""
    intruder = FakeConn("10.0.0.2:40000")
    worker.handle(m.RegisteredWorker("ember://10.0.0.1:7077", "http://x", False, 15.0), intruder)
    assert not worker.registered and worker.master is None
    own = registered_with(worker, "10.0.0.1:7077")
    worker.handle(m.RegisteredWorker("ember://10.0.0.1:7077", "http://x", False, 15.0), intruder)
    assert worker.master is own
    worker.handle(m.LaunchDriver("driver-20261201000000-0001", m.DriverDescription(["touch",
                                                                                    "x"])),
                  intruder)
    assert worker.drivers == {}
    await worker.close_tasks()
