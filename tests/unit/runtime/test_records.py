"""Every state change of the master's records goes through one method that checks where the
record comes from; an illegal move raises instead of passing silently."""

from __future__ import annotations

import pytest

from tests.unit.runtime.fakes import FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime.records import (
    AppInfo,
    DriverInfo,
    IllegalTransition,
    WorkerInfo,
)
from toolkit.runtime.states import ApplicationState, DriverState, ExecutorState, WorkerState


def worker() -> WorkerInfo:
    return WorkerInfo("w1", "10.0.0.2", 4000, 4, 4096, "http://w", FakeConn(),  # type: ignore[arg-type]
                      last_heartbeat=0.0, last_seen=0.0)


def driver() -> DriverInfo:
    return DriverInfo("driver-1", m.DriverDescription(["true"]), 0.0)


def app() -> AppInfo:
    return AppInfo("app-1", m.ApplicationDescription("a", ["sleep", "1"]), None, 0.0)


def test_a_driver_runs_once_then_ends_once() -> None:
    d, w = driver(), worker()
    d.launch(w, 5.0)
    assert (d.state, d.worker_id, d.worker_host_port, d.started) == (
        DriverState.RUNNING, "w1", "10.0.0.2:4000", 5.0)
    with pytest.raises(IllegalTransition, match="driver driver-1 cannot go from RUNNING to RUNN"):
        d.launch(w, 6.0)  # launched twice
    d.finish(DriverState.FINISHED, None, 0)
    with pytest.raises(IllegalTransition, match="cannot go from FINISHED to KILLED"):
        d.finish(DriverState.KILLED)
    with pytest.raises(IllegalTransition):
        d.launch(w, 7.0)
    assert d.state == DriverState.FINISHED


def test_a_driver_ends_only_in_a_final_state() -> None:
    d = driver()
    with pytest.raises(IllegalTransition, match="SUBMITTED is not a final state"):
        d.finish(DriverState.SUBMITTED)
    d.finish(DriverState.KILLED, "killed before it ran")  # from SUBMITTED
    assert d.state == DriverState.KILLED


def test_an_executor_goes_forward_only() -> None:
    a, w = app(), worker()
    e = a.add_executor(w.id, w.address, 2)
    assert e.state == ExecutorState.LAUNCHING
    assert e.move(ExecutorState.RUNNING) is True
    assert e.move(ExecutorState.RUNNING) is False  # a resent report: nothing changes
    assert not e.may_move(ExecutorState.LAUNCHING)
    with pytest.raises(IllegalTransition, match="cannot go from RUNNING to LAUNCHING"):
        e.move(ExecutorState.LAUNCHING)
    e.move(ExecutorState.EXITED)
    with pytest.raises(IllegalTransition):
        e.move(ExecutorState.RUNNING)


def test_an_application_starts_once_and_ends_once() -> None:
    a = app()
    assert a.start() is True and a.start() is False
    a.end(ApplicationState.FINISHED, 9.0)
    assert (a.state, a.ended) == (ApplicationState.FINISHED, 9.0)
    with pytest.raises(IllegalTransition):
        a.start()
    with pytest.raises(IllegalTransition):
        a.end(ApplicationState.FAILED, 10.0)


def test_a_worker_dies_once_and_a_dead_one_is_not_reattached() -> None:
    w = worker()
    w.reattach(FakeConn())  # type: ignore[arg-type]  # a live worker's new link
    assert (w.state, w.epoch) == (WorkerState.ALIVE, 1)
    w.die("heartbeats stopped")
    assert (w.state, w.removed_reason) == (WorkerState.DEAD, "heartbeats stopped")
    with pytest.raises(IllegalTransition, match="worker w1 cannot go from DEAD to ALIVE"):
        w.reattach(FakeConn())  # type: ignore[arg-type]
    with pytest.raises(IllegalTransition):
        w.die("again")


def test_a_worker_unknown_to_a_recovering_master_answers_or_dies() -> None:
    w = worker()
    w.state = WorkerState.UNKNOWN  # as a recovering master marks what it reads back
    w.reattach(FakeConn())  # type: ignore[arg-type]
    assert w.state == WorkerState.ALIVE
