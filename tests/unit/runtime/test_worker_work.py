"""The Worker's reports of driver/executor state: acknowledged, kept and resent until acked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.runtime.fakes import Clock, FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime.runners import DriverRunner, fill_placeholders, launch_header
from toolkit.runtime.states import DriverState
from toolkit.runtime.worker import Worker, WorkerConfig


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Worker]:
    clock = Clock()
    made = Worker(WorkerConfig(masters=(("10.0.0.1", 7077),), host="10.0.0.2", cores=4,
                               memory=4096, work_dir=tmp_path, port=4000),
                  clock=clock, monotonic=clock)
    made.id = "worker-1"
    yield made
    await made.close_tasks()


def running(worker: Worker, driver_id: str) -> None:
    desc = m.DriverDescription(["true"], cores=2, memory=512)
    worker.drivers[driver_id] = DriverRunner(driver_id, desc, worker.config.work_dir, {},
                                             lambda *a: None)


def registered(worker: Worker, conn: FakeConn) -> None:
    worker._link_conns["10.0.0.1:7077"] = conn  # type: ignore[assignment]  # its own link
    worker.handle(m.RegisteredWorker("ember://10.0.0.1:7077", "http://m", False, 15.0), conn)


async def test_changes_made_while_disconnected_are_sent_on_registration(worker: Worker) -> None:
    running(worker, "driver-1")
    worker.handle(m.DriverStateChanged(0, "driver-1", DriverState.FINISHED, "", 0))
    assert (worker.cores_used, worker.memory_used) == (0, 0)
    master = FakeConn()
    registered(worker, master)
    assert master.sent[0] == m.DriverStateChanged(1, "driver-1", "FINISHED", "", 0)
    assert master.sent[1] == m.WorkerLatestState("worker-1", [], [])


async def test_unacknowledged_changes_are_resent_after_a_reconnect(worker: Worker) -> None:
    first = FakeConn()
    registered(worker, first)
    running(worker, "driver-1")
    running(worker, "driver-2")
    worker.handle(m.DriverStateChanged(0, "driver-1", DriverState.FAILED, "exited with code 3",
                                       3))
    worker.handle(m.DriverStateChanged(0, "driver-2", DriverState.RUNNING))
    assert [x.seq for x in first.sent if isinstance(x, m.DriverStateChanged)] == [1, 2]
    worker.handle(m.StateChangeAcked(2), first)

    worker.handle(m.ConnectionClosed("lost"), first)
    worker.master = None
    second = FakeConn()
    registered(worker, second)
    resent = [x for x in second.sent if isinstance(x, m.DriverStateChanged)]
    assert resent == [m.DriverStateChanged(1, "driver-1", "FAILED", "exited with code 3", 3)]
    latest = next(x for x in second.sent if isinstance(x, m.WorkerLatestState))
    assert latest.driver_ids == ["driver-2"]

    worker.handle(m.StateChangeAcked(1), second)
    third = FakeConn()
    worker.handle(m.ConnectionClosed("lost"), second)
    registered(worker, third)
    assert not [x for x in third.sent if isinstance(x, m.DriverStateChanged)]


async def test_commands_from_a_connection_that_is_not_the_master_are_ignored(
        worker: Worker) -> None:
    registered(worker, FakeConn())
    worker.handle(m.LaunchDriver("driver-9", m.DriverDescription(["true"])), FakeConn())
    worker.handle(m.KillDriver("driver-9"), FakeConn())
    assert worker.drivers == {} and worker.cores_used == 0


def test_launch_header_and_placeholders() -> None:
    assert launch_header(["java", "-cp", "a b.jar"]) == (
        b'Launch Command: "java" "-cp" "a b.jar"\n' + b"=" * 40 + b"\n\n")
    values = {"EXECUTOR_ID": "3", "APP_ID": "app-1", "CORES": "2", "HOSTNAME": "h",
              "WORKER_URL": "ember://h:1"}
    assert fill_placeholders(["x", "--id={{EXECUTOR_ID}}", "{{APP_ID}}/{{CORES}}",
                              "{{HOSTNAME}} {{WORKER_URL}}", "{{OTHER}}; rm -rf /"], values) == [
        "x", "--id=3", "app-1/2", "h ember://h:1", "{{OTHER}}; rm -rf /"]


async def test_a_late_retry_on_the_link_it_registered_on_keeps_that_link(
        worker: Worker) -> None:
    """A standby turned it away and then came to lead: the retry timer set then fires on the
    very link the worker is now registered on. It must not close it (the master would take a
    closed link for a lost worker)."""
    link = FakeConn()
    worker.handle(m.MasterInStandby(), link)
    registered(worker, link)
    worker.handle(m.MasterConnected("10.0.0.1:7077"), link)
    assert not link.closed and worker.master is link and worker.registered
    other = FakeConn()
    worker.handle(m.MasterConnected("10.0.0.9:7077"), other)
    assert other.closed  # a link to another master is closed, as before


async def test_a_driver_whose_credential_cannot_be_written_is_reported_in_error(
        tmp_path: Path) -> None:
    import errno

    said: list[tuple[object, str]] = []

    def full_disk() -> dict[str, str]:
        raise OSError(errno.ENOSPC, "No space left on device")
    runner = DriverRunner("driver-20990101000000-0001", m.DriverDescription(["true"]),
                          tmp_path, full_disk, lambda state, message, code: said.append(
                              (state, message)))
    runner.start()
    await asyncio.wait_for(runner._task, 5)  # type: ignore[arg-type]
    assert len(said) == 1 and said[0][0] == DriverState.ERROR
    assert "No space left on device" in said[0][1]
