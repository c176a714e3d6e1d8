"""The Master's driver, application and executor handlers, fed messages directly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.unit.runtime.fakes import Clock, FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.config import MasterConfig
from toolkit.runtime.http import master_json
from toolkit.runtime.master import Master
from toolkit.runtime.records import RETAINED
from toolkit.runtime.states import DriverState, ExecutorState


@pytest.fixture
def master() -> Master:
    clock = Clock()
    made = Master(MasterConfig(host="10.0.0.1", port=7077), clock=clock, monotonic=clock)
    made.work.shuffle = lambda workers: None
    return made


def join(master: Master, wid: str, port: int, cores: int = 2, memory: int = 2048) -> FakeConn:
    conn = FakeConn(f"10.0.0.2:{port}")
    master.handle(m.RegisterWorker(wid, "10.0.0.2", port, cores, memory, "http://x", master.url),
                  conn)
    return conn


def submit(master: Master, conn: FakeConn, cores: int = 1, memory: int = 512,
           supervise: bool = False, watch: bool = False) -> str:
    master.handle(m.RequestSubmitDriver(m.DriverDescription(["run"], cores, memory, supervise),
                                        watch), conn)
    reply = next(x for x in conn.sent if isinstance(x, m.SubmitDriverResponse))
    conn.sent.remove(reply)
    assert reply.success and reply.driver_id
    return reply.driver_id


def sent(conn: FakeConn, kind: type[Any]) -> list[Any]:
    return [x for x in conn.sent if isinstance(x, kind)]


def test_submitted_driver_is_launched_and_its_resources_accounted(master: Master) -> None:
    worker = join(master, "w1", 4001)
    client = FakeConn()
    driver_id = submit(master, client, cores=2, memory=1024, watch=True)

    launch = sent(worker, m.LaunchDriver)
    assert [x.driver_id for x in launch] == [driver_id]
    info = master.workers["w1"]
    assert (info.cores_used, info.memory_used) == (2, 1024)
    assert sent(client, m.DriverStatusResponse)[-1].state == "RUNNING"

    master.handle(m.DriverStateChanged(7, driver_id, DriverState.FINISHED, "", 0), worker)
    assert sent(worker, m.StateChangeAcked) == [m.StateChangeAcked(7)]
    assert (info.cores_used, info.memory_used) == (0, 0)
    final = sent(client, m.DriverStatusResponse)[-1]
    assert (final.state, final.exit_code) == ("FINISHED", 0)
    state = master_json(master)
    assert state["activedrivers"] == []
    assert [d["state"] for d in state["completeddrivers"]] == ["FINISHED"]


def test_drivers_go_round_robin_and_wait_when_nothing_fits(master: Master) -> None:
    first, second = join(master, "w1", 4001), join(master, "w2", 4002)
    client = FakeConn()
    ids = [submit(master, client) for _ in range(4)]
    big = submit(master, client, cores=3)
    assert len(sent(first, m.LaunchDriver)) == len(sent(second, m.LaunchDriver)) == 2
    assert master.work.drivers[big].state == "SUBMITTED"
    master.handle(m.DriverStateChanged(1, ids[0], DriverState.FINISHED, "", 0), first)
    assert master.work.drivers[big].state == "SUBMITTED"


def test_a_state_change_from_another_worker_or_a_repeat_is_acked_and_ignored(
        master: Master) -> None:
    worker, other = join(master, "w1", 4001), join(master, "w2", 4002, cores=1, memory=1)
    driver_id = submit(master, FakeConn())
    master.handle(m.DriverStateChanged(1, driver_id, DriverState.FAILED, "", 1), other)
    assert master.work.drivers[driver_id].state == "RUNNING"
    master.handle(m.DriverStateChanged(2, driver_id, DriverState.FINISHED, "", 0), worker)
    master.handle(m.DriverStateChanged(2, driver_id, DriverState.FINISHED, "", 0), worker)  # resent
    assert sent(worker, m.StateChangeAcked) == [m.StateChangeAcked(2)] * 2
    assert [d.state for d in master.work.drivers.completed] == ["FINISHED"]
    assert sent(other, m.StateChangeAcked) == [m.StateChangeAcked(1)]


def test_lost_worker_relaunches_supervised_drivers_and_errors_the_others(
        master: Master) -> None:
    worker = join(master, "w1", 4001, cores=4)
    client = FakeConn()
    kept = submit(master, client, supervise=True, watch=True)
    dropped = submit(master, client)
    spare = join(master, "w2", 4002)

    master.handle(m.WorkerStopping("w1", "gone"), worker)

    old = master.work.driver_status(kept)
    assert old.state == "RELAUNCHING" and old.relaunched_as
    assert master.work.driver_status(dropped).state == "ERROR"
    assert [x.driver_id for x in sent(spare, m.LaunchDriver)] == [old.relaunched_as]
    assert master.work.drivers[old.relaunched_as].worker_id == "w2"
    watched = sent(client, m.DriverStatusResponse)
    assert [(s.driver_id, s.state) for s in watched][-2:] == [
        (kept, "RELAUNCHING"), (old.relaunched_as, "RUNNING")]


def test_kill_waiting_driver_is_immediate_and_unknown_is_refused(master: Master) -> None:
    driver_id = submit(master, FakeConn())
    killed = master.work.kill_driver(driver_id)
    assert killed.success and master.work.driver_status(driver_id).state == "KILLED"
    assert not master.work.kill_driver("driver-none").success
    assert master.work.driver_status("driver-none").found is False


def test_completed_drivers_are_bounded(master: Master) -> None:
    for _ in range(RETAINED + 5):
        master.work.kill_driver(submit(master, FakeConn()))
    assert len(master.work.drivers.completed) <= RETAINED
    assert master.work.clear_completed().success and master.work.drivers.completed == []


def test_unknown_work_on_a_reregistered_worker_is_killed(master: Master) -> None:
    worker = join(master, "w1", 4001)
    driver_id = submit(master, FakeConn())
    master.handle(m.WorkerLatestState("w1", [m.ExecutorRef("app-x", 0)],
                                      [driver_id, "driver-stale"]), worker)
    assert sent(worker, m.KillDriver) == [m.KillDriver("driver-stale")]
    assert sent(worker, m.KillExecutor) == [m.KillExecutor(master.url, "app-x", 0)]


def register_app(master: Master, **kw: Any) -> tuple[FakeConn, str]:
    conn = FakeConn("10.0.0.9:5000")
    master.handle(m.RegisterApplication(m.ApplicationDescription("app", ["run"], **kw)), conn)
    return conn, sent(conn, m.RegisteredApplication)[0].app_id


def test_a_kill_a_reset_link_may_have_lost_is_sent_again(master: Master) -> None:
    worker = join(master, "w1", 4001)
    driver_id = submit(master, FakeConn())
    assert master.work.kill_driver(driver_id).success
    assert sent(worker, m.KillDriver) == [m.KillDriver(driver_id)]
    worker.sent.clear()
    # the worker's report after its link came back: the driver still runs there
    master.handle(m.WorkerLatestState("w1", [], [driver_id]), worker)
    assert sent(worker, m.KillDriver) == [m.KillDriver(driver_id)]


def test_app_executors_spread_out_and_failures_fail_the_app(master: Master) -> None:
    workers = [join(master, f"w{i}", 4000 + i, cores=2) for i in range(3)]
    client, app_id = register_app(master, cores_per_executor=1, max_cores=3,
                                  memory_per_executor=256)
    assert sorted(x.worker_id for x in sent(client, m.ExecutorAdded)) == ["w0", "w1", "w2"]
    assert master_json(master)["activeapps"][0]["state"] == "RUNNING"

    for seq in range(1, 11):
        added = sent(client, m.ExecutorAdded)[-1]
        conn = workers[int(added.worker_id[1])]
        master.handle(m.ExecutorStateChanged(seq, app_id, added.exec_id, ExecutorState.EXITED,
                                             "bad", 1), conn)
        if app_id not in master.work.apps:
            break
    # Two executors still run (never reported RUNNING either); Spark's rule needs none RUNNING.
    assert app_id not in master.work.apps
    assert sent(client, m.ApplicationRemoved)[0].message == "10 executors failed"
    assert master.work.apps.completed[0].state == "FAILED"
    assert all(w.cores_used == 0 for w in master.workers.values())


def test_an_executor_that_ran_a_while_starts_the_failure_count_again(master: Master) -> None:
    from toolkit.runtime.records import RAN_WELL

    worker = join(master, "w0", 4000, cores=1)
    client, app_id = register_app(master, cores_per_executor=1, max_cores=1,
                                  memory_per_executor=256)
    clock = master.work.clock
    assert isinstance(clock, Clock)
    for seq in range(1, 41, 2):  # 20 crashes, each after a good run
        added = sent(client, m.ExecutorAdded)[-1]
        master.handle(m.ExecutorStateChanged(seq, app_id, added.exec_id, ExecutorState.RUNNING,
                                             "", None), worker)
        clock.now += RAN_WELL
        master.handle(m.ExecutorStateChanged(seq + 1, app_id, added.exec_id,
                                             ExecutorState.EXITED, "crashed", 1), worker)
    assert app_id in master.work.apps  # only failures in a row fail an application
    for seq in range(41, 61, 2):  # ten that crash at once: the application fails
        added = sent(client, m.ExecutorAdded)[-1]
        master.handle(m.ExecutorStateChanged(seq, app_id, added.exec_id, ExecutorState.RUNNING,
                                             "", None), worker)
        master.handle(m.ExecutorStateChanged(seq + 1, app_id, added.exec_id,
                                             ExecutorState.EXITED, "crashed", 1), worker)
    assert app_id not in master.work.apps


def test_app_driver_disconnect_ends_the_app_and_frees_the_workers(master: Master) -> None:
    worker = join(master, "w1", 4001)
    client, app_id = register_app(master)
    assert master.workers["w1"].cores_used == 2
    master.handle(m.ConnectionClosed("peer gone"), client)
    assert master.work.apps.completed[0].state == "FAILED"
    assert sent(worker, m.KillExecutor)[0].app_id == app_id
    assert sent(worker, m.ApplicationFinished) == [m.ApplicationFinished(app_id)]
    assert master.workers["w1"].cores_used == 0


def test_two_apps_on_one_connection_both_end_when_it_closes(master: Master) -> None:
    join(master, "w1", 4001, cores=4)
    conn = FakeConn("10.0.0.9:5000")
    for _ in range(2):
        master.handle(m.RegisterApplication(m.ApplicationDescription("a", ["run"],
                                                                     max_cores=1)), conn)
    assert len(master.work.apps) == 2
    master.handle(m.ConnectionClosed("gone"), conn)
    assert master.work.apps == {}
    assert master.workers["w1"].cores_used == 0


def test_reregistered_worker_that_lost_work_has_it_relaunched_or_errored(master: Master) -> None:
    old = join(master, "w1", 4001, cores=4)
    client = FakeConn()
    kept = submit(master, client, supervise=True)
    dropped = submit(master, client)
    still_running = submit(master, client)
    new = join(master, "w1", 4001, cores=4)  # same id, new link: a re-registration
    registered = sent(new, m.RegisteredWorker)[0]
    assert registered.duplicate and registered.registration == 1
    after = submit(master, client)  # launched in the new epoch: not in the report below
    assert master.work.drivers[after].worker_id == "w1"

    master.handle(m.WorkerLatestState("w1", [], [still_running], registration=1), new)

    assert master.work.driver_status(kept).state == "RELAUNCHING"
    assert master.work.driver_status(dropped).state == "ERROR"
    assert "no longer runs it" in (master.work.driver_status(dropped).message or "")
    assert master.work.driver_status(still_running).state == "RUNNING"
    assert master.work.driver_status(after).state == "RUNNING"
    relaunched = master.work.driver_status(kept).relaunched_as
    assert relaunched and master.work.drivers[relaunched].state == "RUNNING"
    assert old.closed


def test_a_bad_state_from_a_worker_changes_nothing(master: Master) -> None:
    worker = join(master, "w1", 4001)
    driver_id = submit(master, FakeConn())
    for state in (DriverState.SUBMITTED, DriverState.RELAUNCHING):  # not a worker's to say
        master.handle(m.DriverStateChanged(1, driver_id, state), worker)
    assert master.work.drivers[driver_id].state == "RUNNING"
    # a state that is no driver state never reaches a handler: the wire refuses it
    body = b'{"type":"DriverStateChanged","seq":1,"driver_id":"d","state":"NONSENSE"}'
    with pytest.raises(wire.BadMessage, match="invalid DriverStateChanged message"):
        wire.TO_MASTER.decode(body)
    assert master.workers["w1"].cores_used == 1
    assert len(sent(worker, m.StateChangeAcked)) == 2  # acknowledged, and ignored


def test_killing_a_relaunched_driver_names_its_new_id(master: Master) -> None:
    worker = join(master, "w1", 4001)
    driver_id = submit(master, FakeConn(), supervise=True)
    master.handle(m.WorkerStopping("w1", "gone"), worker)
    answer = master.work.kill_driver(driver_id)
    new_id = master.work.driver_status(driver_id).relaunched_as
    assert not answer.success and f"relaunched as {new_id}" in answer.message


async def test_a_request_asked_from_inside_the_process_goes_through_the_inbox() -> None:
    master = Master(MasterConfig(host="10.0.0.1"))
    desc = m.DriverDescription(["true"], cores=1, memory=64)
    asking = asyncio.ensure_future(master.ask(m.RequestSubmitDriver(desc),
                                              m.SubmitDriverResponse, timeout=5))
    await asyncio.sleep(0.05)
    assert not asking.done() and master.work.drivers == {}  # nothing happens outside the inbox
    master.start_consumer()
    submitted = await asking
    assert submitted.success and submitted.driver_id in master.work.drivers
    status = await master.ask(m.RequestDriverStatus(submitted.driver_id or ""),
                              m.DriverStatusResponse)
    assert (status.found, status.state) == (True, "SUBMITTED")
    with pytest.raises(TypeError, match="RequestDriverList was answered with DriverListResponse"):
        await master.ask(m.RequestDriverList(), m.DriverStatusResponse)


def test_a_report_that_answers_an_earlier_registration_is_ignored(master: Master) -> None:
    first = join(master, "w1", 4001, cores=4)
    client = FakeConn()
    placed = submit(master, client)  # launched in registration 0
    second = join(master, "w1", 4001, cores=4)  # registration 1, before 0's report came
    # the report answering registration 0 comes late, and does not list the driver placed
    # since: it is not taken as the worker having lost it
    master.handle(m.WorkerLatestState("w1", [], [], registration=0), second)
    assert master.work.driver_status(placed).state == "RUNNING"
    assert sent(second, m.KillDriver) == [] and first.closed


def test_a_worker_whose_link_closed_keeps_its_work_and_gets_no_new_work(
        master: Master) -> None:
    worker = join(master, "w1", 4001, cores=2)
    client = FakeConn()
    running = submit(master, client, supervise=True)
    master.handle(m.ConnectionClosed("connection reset", reset=True), worker)
    waiting = submit(master, client)  # no offer from a worker with no link
    assert master.work.driver_status(running).state == "RUNNING"
    assert master.work.driver_status(waiting).state == "SUBMITTED"
    refused = master.work.kill_driver(running)  # said, not lost
    assert not refused.success and "link to the master is down" in refused.message

    back = join(master, "w1", 4001, cores=2)  # the same worker, a new link: nothing lost
    registration = sent(back, m.RegisteredWorker)[0].registration
    master.handle(m.WorkerLatestState("w1", [], [running], registration), back)
    assert master.work.driver_status(running).state == "RUNNING"
    assert master.work.driver_status(running).relaunched_as is None
    assert [x.driver_id for x in sent(back, m.LaunchDriver)] == [waiting]
    assert sent(back, m.KillDriver) == []


def app_with_two_executors(master: Master
                           ) -> tuple[FakeConn, FakeConn, m.ApplicationDescription, str]:
    """(worker link, program link, description, app id) of an app with two executors."""
    worker = join(master, "w1", 4001, cores=2)
    program = FakeConn("10.0.0.9:5000")
    desc = m.ApplicationDescription("a", ["run"], cores_per_executor=1, max_cores=2)
    master.handle(m.RegisterApplication(desc), program)
    return worker, program, desc, sent(program, m.RegisteredApplication)[0].app_id


async def test_an_application_whose_link_was_reset_waits_for_its_program(
        master: Master) -> None:
    worker, program, desc, app_id = app_with_two_executors(master)
    assert len(sent(worker, m.LaunchExecutor)) == 2
    master.handle(m.ConnectionClosed("connection reset", reset=True), program)
    assert master.work.apps[app_id].state == "UNKNOWN"  # not FAILED: it may come back
    assert sent(worker, m.KillExecutor) == []
    back = FakeConn("10.0.0.9:5001")
    master.handle(m.ReconnectApplication(app_id, desc, request_id=7), back)
    assert sent(back, m.RegisteredApplication)[0].in_reply_to == 7
    assert master.work.apps[app_id].state == "RUNNING"
    assert sent(worker, m.KillExecutor) == []  # the same executors, never restarted


async def test_an_application_whose_program_moved_to_a_new_link_keeps_running(
        master: Master) -> None:
    """Its program stopped hearing this master and connected again, before the master saw
    the old link go: the new link replaces it, and the old one's end fails nothing."""
    worker, program, desc, app_id = app_with_two_executors(master)
    back = FakeConn("10.0.0.9:5001")
    master.handle(m.ReconnectApplication(app_id, desc, request_id=3), back)
    assert sent(back, m.RegisteredApplication)[0].in_reply_to == 3
    master.handle(m.ConnectionClosed("connection closed by peer"), program)
    assert master.work.apps[app_id].state == "RUNNING"
    assert master.work.apps[app_id].conn is back
    assert sent(worker, m.KillExecutor) == []


async def test_an_application_whose_program_does_not_come_back_fails_after_the_timeout(
        master: Master) -> None:
    worker, program, _, app_id = app_with_two_executors(master)
    master.handle(m.ConnectionClosed("connection reset", reset=True), program)
    master.handle(m.CheckApplication(app_id))  # the timer, worker_timeout later
    assert app_id not in master.work.apps
    assert master.work.apps.completed[-1].state == "FAILED"
    assert len(sent(worker, m.KillExecutor)) == 2
