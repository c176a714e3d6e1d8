"""The Master's handlers, fed messages directly (no sockets, a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.runtime.fakes import Clock, FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime.config import MasterConfig
from toolkit.runtime.http import master_json
from toolkit.runtime.master import REAPER_ITERATIONS, Master
from toolkit.runtime.states import MasterState, WorkerState

TIMEOUT = 60.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def master(clock: Clock) -> Master:
    return Master(MasterConfig(host="10.0.0.1", port=7077, webui_port=8080,
                               worker_timeout=TIMEOUT), clock=clock, monotonic=clock)


def register(master: Master, conn: Any, wid: str = "worker-1", port: int = 4000,
             cores: int = 4, memory: int = 2048) -> m.Message:
    master.handle(m.RegisterWorker(wid, "10.0.0.2", port, cores, memory, "http://10.0.0.2:8081",
                                   master.url), conn)
    return conn.last()  # type: ignore[no-any-return]


def test_registration_is_acknowledged_with_the_heartbeat_interval(master: Master) -> None:
    reply = register(master, FakeConn())
    assert reply == m.RegisteredWorker("ember://10.0.0.1:7077", "http://10.0.0.1:8080", False,
                                       TIMEOUT / 4)
    assert master.workers["worker-1"].state == WorkerState.ALIVE


def test_standby_master_turns_workers_away(master: Master) -> None:
    master.state = MasterState.STANDBY
    assert register(master, FakeConn()) == m.MasterInStandby()
    assert master.workers == {}


def test_duplicate_id_is_a_re_registration_on_the_new_link(master: Master) -> None:
    old, new = FakeConn(), FakeConn()
    register(master, old)
    reply = register(master, new)
    assert isinstance(reply, m.RegisteredWorker) and reply.duplicate
    assert old.closed and master.workers["worker-1"].conn is new
    assert len(master.workers) == 1


def test_unknown_worker_with_duplicate_id_comes_back_alive(master: Master) -> None:
    register(master, FakeConn())
    master.workers["worker-1"].state = WorkerState.UNKNOWN
    reply = register(master, FakeConn())
    assert isinstance(reply, m.RegisteredWorker) and reply.duplicate
    assert master.workers["worker-1"].state == WorkerState.ALIVE


def test_same_address_as_a_live_worker_is_refused(master: Master) -> None:
    register(master, FakeConn(), "worker-1")
    reply = register(master, FakeConn(), "worker-2")
    assert reply == m.RegisterWorkerFailed(
        "Attempted to re-register worker at same address: 10.0.0.2:4000")
    assert list(master.workers) == ["worker-1"]


def test_same_address_as_a_dead_worker_replaces_it(master: Master) -> None:
    conn = FakeConn()
    register(master, conn, "worker-1")
    master.handle(m.WorkerStopping("worker-1", "stopped"), conn)
    reply = register(master, FakeConn(), "worker-2")
    assert isinstance(reply, m.RegisteredWorker) and not reply.duplicate
    assert list(master.workers) == ["worker-2"]


def test_a_new_id_where_a_worker_lost_its_link_replaces_it_at_once(master: Master) -> None:
    """Its supervisor restarted it: the old process and its work are gone."""
    conn = FakeConn()
    register(master, conn, "worker-1")
    master.handle(m.ConnectionClosed("connection reset", reset=True), conn)
    reply = register(master, FakeConn(), "worker-2")
    assert isinstance(reply, m.RegisteredWorker) and not reply.duplicate
    assert master.workers["worker-1"].state == WorkerState.DEAD
    assert master.workers["worker-1"].removed_reason == (
        "replaced by worker worker-2 at the same address")
    assert master.workers["worker-2"].state == WorkerState.ALIVE


def test_same_address_as_an_unknown_worker_replaces_it(master: Master) -> None:
    register(master, FakeConn(), "worker-1")
    master.workers["worker-1"].state = WorkerState.UNKNOWN
    register(master, FakeConn(), "worker-2")
    assert master.workers["worker-1"].state == WorkerState.DEAD
    assert master.workers["worker-2"].state == WorkerState.ALIVE


def test_heartbeat_refreshes_a_live_worker(master: Master, clock: Clock) -> None:
    register(master, FakeConn())
    clock.now += 10
    master.handle(m.Heartbeat("worker-1"), FakeConn())
    assert master.workers["worker-1"].last_heartbeat == clock.now


def test_heartbeat_from_a_dead_worker_asks_it_to_reconnect(master: Master) -> None:
    conn = FakeConn()
    register(master, conn)
    master.handle(m.WorkerStopping("worker-1", "test"), conn)
    master.handle(m.Heartbeat("worker-1"), conn)
    assert conn.last() == m.ReconnectWorker(master.url)


def test_heartbeat_from_a_forgotten_worker_asks_it_to_reconnect(master: Master,
                                                                 clock: Clock) -> None:
    """Spark ignores it forever; here a worker culled from the list can still come back."""
    conn = FakeConn()
    register(master, conn)
    master.handle(m.WorkerStopping("worker-1", "stopped"), conn)
    clock.now += (REAPER_ITERATIONS + 1) * TIMEOUT + 1
    master.handle(m.CheckForWorkerTimeOut())
    assert master.workers == {}
    for _ in range(10):  # heartbeats queued during a partition, all arriving at once
        master.handle(m.Heartbeat("worker-1"), conn)
    assert [x for x in conn.sent if isinstance(x, m.ReconnectWorker)] == [
        m.ReconnectWorker(master.url)]  # asked once, so it re-registers once


def test_silent_worker_is_dead_after_the_timeout_not_before(master: Master, clock: Clock) -> None:
    link = FakeConn()
    register(master, link)
    clock.now += TIMEOUT
    master.handle(m.CheckForWorkerTimeOut())
    assert master.workers["worker-1"].state == WorkerState.ALIVE and not link.closed
    clock.now += 0.001
    master.handle(m.CheckForWorkerTimeOut())
    worker = master.workers["worker-1"]
    assert worker.state == WorkerState.DEAD
    assert worker.removed_reason == "Not receiving heartbeat for 60 seconds"
    # its link is dropped, unsent messages too: a launch sent into a partition never
    # arrives once it heals (the worker registers anew)
    assert link.aborted


def test_dead_worker_stays_listed_then_is_culled(master: Master, clock: Clock) -> None:
    conn = FakeConn()
    register(master, conn)
    master.handle(m.ConnectionClosed("reset"), conn)
    clock.now += (REAPER_ITERATIONS + 1) * TIMEOUT
    master.handle(m.CheckForWorkerTimeOut())
    assert "worker-1" in master.workers
    clock.now += 1
    master.handle(m.CheckForWorkerTimeOut())
    assert master.workers == {}


def test_a_closed_link_is_a_blip_until_the_heartbeats_time_out(master: Master,
                                                                 clock: Clock) -> None:
    conn, other = FakeConn(), FakeConn()
    register(master, conn, "worker-1", port=4000)
    register(master, other, "worker-2", port=4001)
    master.handle(m.ConnectionClosed("connection reset", reset=True), conn)
    assert master.workers["worker-1"].state == WorkerState.ALIVE  # kept, with its work
    assert master.workers["worker-1"].conn is None
    clock.now += TIMEOUT + 0.001
    master.handle(m.Heartbeat("worker-2"), other)
    master.handle(m.CheckForWorkerTimeOut())
    assert master.workers["worker-1"].state == WorkerState.DEAD
    assert master.workers["worker-1"].removed_reason == "Not receiving heartbeat for 60 seconds"
    assert master.workers["worker-2"].state == WorkerState.ALIVE


def test_a_link_its_process_closed_is_a_lost_worker_at_once(master: Master) -> None:
    """No reset: the worker's process closed it, or ended (its kernel closed its sockets)."""
    conn = FakeConn()
    register(master, conn, "worker-1", port=4000)
    master.handle(m.ConnectionClosed("connection closed by peer"), conn)
    assert master.workers["worker-1"].state == WorkerState.DEAD
    assert master.workers["worker-1"].removed_reason == (
        "10.0.0.2:4000 got disassociated (connection closed by peer)")


def test_stopping_worker_is_dead_with_the_reason_it_gave(master: Master) -> None:
    conn = FakeConn()
    register(master, conn)
    master.handle(m.WorkerStopping("worker-1", "worker stopped: received SIGTERM"), conn)
    assert master.workers["worker-1"].removed_reason == "worker stopped: received SIGTERM"


def test_dead_worker_rejoins_with_the_same_id_after_reconnect(master: Master,
                                                              clock: Clock) -> None:
    conn = FakeConn()
    register(master, conn)
    clock.now += TIMEOUT + 1
    master.handle(m.CheckForWorkerTimeOut())
    reply = register(master, conn)
    assert isinstance(reply, m.RegisteredWorker)
    assert master.workers["worker-1"].state == WorkerState.ALIVE


def test_json_counts_only_alive_workers_and_lists_dead_ones(master: Master) -> None:
    alive, dead = FakeConn(), FakeConn()
    register(master, alive, "worker-1", port=4000, cores=4, memory=2048)
    register(master, dead, "worker-2", port=4001, cores=8, memory=4096)
    master.handle(m.WorkerStopping("worker-2", "stopped"), dead)
    state = master_json(master)
    assert (state["aliveworkers"], state["cores"], state["memory"]) == (1, 4, 2048)
    assert [w["state"] for w in state["workers"]] == ["ALIVE", "DEAD"]
    assert state["resources"] == [{}]
    assert state["workers"][0]["lastheartbeat"] == 1_000_000_000


def test_message_without_a_handler_closes_its_connection(master: Master) -> None:
    conn = FakeConn()
    master.handle(m.RegisteredWorker("x", "y", False, 1.0), conn)
    assert conn.closed
