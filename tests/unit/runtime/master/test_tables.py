"""The drivers and applications tables: what changes, what they return, who is told."""

from __future__ import annotations

from tests.unit.runtime.fakes import FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime.master.apps import Apps
from toolkit.runtime.master.drivers import Drivers
from toolkit.runtime.records import WorkerInfo
from toolkit.runtime.states import ApplicationState, DriverState


def worker() -> WorkerInfo:
    return WorkerInfo("w1", "10.0.0.2", 4000, 4, 4096, "http://w", None, last_heartbeat=0.0,
                      last_seen=0.0)


def test_a_driver_waits_runs_and_completes_and_its_watchers_are_told_once() -> None:
    drivers, w, client = Drivers(), worker(), FakeConn()
    d = drivers.submit(m.DriverDescription(["true"]), 0.0)
    assert list(drivers.waiting) == [d.id] and drivers[d.id] is d
    drivers.watch(d.id, client)  # type: ignore[arg-type]
    drivers.launch(d, w, 1.0)
    assert drivers.waiting == {} and w.drivers == {d.id: d}
    assert drivers.to_tell(d) == {client}  # RUNNING: still watched
    drivers.finish(d, DriverState.FINISHED, None, 0, w)
    assert d.id not in drivers and drivers.completed == [d] and w.drivers == {}
    assert drivers.to_tell(d) == {client} and drivers.to_tell(d) == set()  # then nobody
    assert drivers.find(d.id) is d


def test_a_relaunched_driver_hands_its_watchers_to_its_new_id() -> None:
    drivers, w, client = Drivers(), worker(), FakeConn()
    old = drivers.submit(m.DriverDescription(["true"], supervise=True), 0.0)
    drivers.watch(old.id, client)  # type: ignore[arg-type]
    drivers.launch(old, w, 1.0)
    new = drivers.relaunch(old, "worker lost", 2.0, w)
    assert (old.state, old.relaunched_as) == (DriverState.RELAUNCHING, new.id)
    assert list(drivers.waiting) == [new.id] and w.drivers == {}
    assert drivers.to_tell(old) == {client} and drivers.to_tell(new) == {client}
    drivers.forget(client)  # type: ignore[arg-type]
    assert drivers.to_tell(new) == set()


def test_an_application_ends_with_its_executors_and_leaves_its_client() -> None:
    apps, client = Apps(), FakeConn()
    app = apps.register(m.ApplicationDescription("a", ["sleep", "1"], max_cores=2),
                        client, 0.0)  # type: ignore[arg-type]
    assert apps.wanting() == [app]
    executor = app.add_executor("w1", "10.0.0.2:4000", 2)
    app.start()
    assert apps.wanting() == []
    assert apps.end(app, ApplicationState.FINISHED, 5.0) == [executor]
    assert app.executors == {} and app.id not in apps and apps.completed == [app]
    assert apps.of_client(client) == []  # type: ignore[arg-type]
