"""Filesystem recovery records: durable files, one per record; a bad one is skipped with its
name; an unknown mode is refused by name; one lock, one leader."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from tests.unit.runtime.fakes import FakeConn
from toolkit.errors import ConfigError
from toolkit.runtime import messages as m
from toolkit.runtime.master.drivers import Drivers
from toolkit.runtime.master.modes import store_for
from toolkit.runtime.master.store import FileStore, NoStore
from toolkit.runtime.master.workers import Workers
from toolkit.runtime.records import WorkerInfo
from toolkit.runtime.states import DriverState


def worker() -> WorkerInfo:
    return WorkerInfo("w1", "10.0.0.2", 4000, 4, 4096, "http://w", FakeConn(),  # type: ignore[arg-type]
                      last_heartbeat=0.0, last_seen=0.0)


def test_what_the_tables_change_is_what_a_new_leader_reads(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    workers, drivers = Workers(store), Drivers(store)
    w = worker()
    workers.add(w)
    finished = drivers.submit(m.DriverDescription(["true"]), 1.0)
    drivers.launch(finished, w, 2.0)
    drivers.finish(finished, DriverState.FINISHED, None, 0, w)
    running = drivers.submit(m.DriverDescription(["sleep", "9"]), 3.0)
    drivers.launch(running, w, 4.0)
    waiting = drivers.submit(m.DriverDescription(["true"], cores=64), 5.0)

    found = FileStore(tmp_path).read()
    assert [x.id for x in found.workers] == ["w1"]
    assert [(d.id, d.state, d.worker_id) for d in found.drivers] == [
        (running.id, DriverState.RUNNING, "w1"), (waiting.id, DriverState.SUBMITTED, None)]
    assert [(d.id, d.state) for d in found.completed] == [(finished.id, DriverState.FINISHED)]
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in tmp_path.glob("*.json"))

    workers.remove(w, "gone")
    drivers.clear_completed()
    found = FileStore(tmp_path).read()
    assert found.workers == [] and found.completed == []


def test_a_corrupt_record_is_named_and_skipped(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    store = FileStore(tmp_path)
    Workers(store).add(worker())
    (tmp_path / "driver-torn.json").write_bytes(b'{"id": "driver-torn", "desc": {"comm')
    with caplog.at_level(logging.ERROR):
        found = FileStore(tmp_path).read()
    assert [x.id for x in found.workers] == ["w1"] and found.drivers == []
    assert f"Skipping the unreadable recovery record driver torn in {tmp_path}" in caplog.text


def test_one_directory_has_one_leader(tmp_path: Path) -> None:
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    assert first.try_lead() is True
    assert second.try_lead() is False  # another process's lock: flock is per open file
    assert first.try_lead() is True


@pytest.mark.parametrize(("mode", "directory", "error"), [
    ("filesystem", None, "recovery mode filesystem needs a directory: --recovery-dir"),
    ("zookeeper", None, "recovery mode zookeeper needs ZooKeeper's address: --zookeeper-url"),
    ("zk", None, "unknown recovery mode 'zk': use none or filesystem or zookeeper"),
])
def test_a_mode_that_cannot_work_is_refused_by_name(mode: str, directory: Path | None,
                                                    error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        store_for(mode, directory)


def test_none_keeps_nothing() -> None:
    assert isinstance(store_for("none", None), NoStore)


async def test_a_master_that_cannot_record_acknowledges_nothing_and_exits_non_zero(
        tmp_path: Path) -> None:
    from toolkit.runtime.config import MasterConfig
    from toolkit.runtime.master import Master

    directory = tmp_path / "recovery"
    master = Master(MasterConfig(host="10.0.0.1", recovery_mode="filesystem",
                                 recovery_dir=directory))
    master.start_consumer()
    master.post(m.TryToLead())
    client = FakeConn()
    for _ in range(100):
        if master.state == "ALIVE":
            break
        await asyncio.sleep(0.01)
    assert master.state == "ALIVE"
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    directory.write_text("not a directory any more\n")  # every record now fails
    master.post(m.RequestSubmitDriver(m.DriverDescription(["true"]), request_id=1), client)  # type: ignore[arg-type]
    await asyncio.wait_for(master.stopped.wait(), 5)
    assert master.exit_code == 1 and client.sent == []  # no answer that was not recorded


async def test_a_workers_report_is_acknowledged_only_once_recorded(tmp_path: Path) -> None:
    from toolkit.runtime.config import MasterConfig
    from toolkit.runtime.master import Master
    from toolkit.runtime.states import DriverState

    directory = tmp_path / "recovery"
    master = Master(MasterConfig(host="10.0.0.1", recovery_mode="filesystem",
                                 recovery_dir=directory))
    master.start_consumer()
    master.post(m.TryToLead())
    for _ in range(100):
        if master.state == "ALIVE":
            break
        await asyncio.sleep(0.01)
    worker, client = FakeConn("10.0.0.2:4001"), FakeConn()
    master.post(m.RegisterWorker("w1", "10.0.0.2", 4001, 1, 1024, "http://x", master.url),
                worker)  # type: ignore[arg-type]
    master.post(m.RequestSubmitDriver(m.DriverDescription(["true"]), request_id=1), client)  # type: ignore[arg-type]
    for _ in range(100):
        launched = [x for x in worker.sent if isinstance(x, m.LaunchDriver)]
        if launched:
            break
        await asyncio.sleep(0.01)
    for path in directory.iterdir():
        if path.is_file():
            path.unlink()
    shutil.rmtree(directory)
    directory.write_text("not a directory any more\n")  # the driver's end cannot be recorded
    master.post(m.DriverStateChanged(1, launched[0].driver_id, DriverState.FINISHED, "", 0),
                worker)  # type: ignore[arg-type]
    await asyncio.wait_for(master.stopped.wait(), 5)
    assert master.exit_code == 1
    assert not [x for x in worker.sent if isinstance(x, m.StateChangeAcked)]  # sent again later
