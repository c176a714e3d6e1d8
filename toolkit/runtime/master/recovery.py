"""A new leader's recovery: the records read back into the tables, and, at its end, what did
not come back settled as lost (Spark's beginRecovery and completeRecovery)."""

from __future__ import annotations

from toolkit.runtime.master.store import Recovered, StoredApp, StoredDriver
from toolkit.runtime.master.work import Work
from toolkit.runtime.master.workers import Workers
from toolkit.runtime.records import AppInfo, DriverInfo, ExecutorInfo, WorkerInfo
from toolkit.runtime.states import ApplicationState, DriverState, WorkerState


def restore(workers: Workers, work: Work, found: Recovered, now: float, seen: float) -> None:
    """Workers and applications come back UNKNOWN (until they register or reconnect), with
    what they ran; the waiting drivers wait again; the history is kept."""
    for stored in found.workers:
        workers.restore(WorkerInfo(stored.id, stored.host, stored.port, stored.cores,
                                   stored.memory, stored.webui_url, None, last_heartbeat=now,
                                   last_seen=seen, state=WorkerState.UNKNOWN))
    for kept in found.drivers:
        work.drivers.restore(_driver(kept), workers.get(kept.worker_id or ""))
    for kept in found.completed:
        work.drivers.restore_completed(_driver(kept))
    for app_kept in found.apps:
        app = _app(app_kept, ApplicationState.UNKNOWN)
        work.apps.restore(app)
        for executor in app.executors.values():
            worker = workers.get(executor.worker_id)
            if worker is not None:
                worker.executors[executor.key] = executor
    for app_kept in found.completed_apps:
        work.apps.restore_completed(_app(app_kept, app_kept.state))


def settle(workers: Workers, work: Work) -> None:
    """End of recovery: an application whose driver program did not come back ends FAILED; a
    running driver whose worker is not back (or was never stored) is lost like any driver of
    a lost worker."""
    for app in work.unknown_apps():
        work.end_app(app, ApplicationState.FAILED,
                     "its driver program did not come back to the recovering master")
    for driver in list(work.drivers.values()):
        worker = workers.live(driver.worker_id or "")
        if driver.state == DriverState.RUNNING and (worker is None
                                                     or driver.id not in worker.drivers):
            work.lose_driver(driver, "its worker did not come back to the recovering master")


def _driver(kept: StoredDriver) -> DriverInfo:
    return DriverInfo(kept.id, kept.desc, kept.submitted, kept.state, kept.worker_id,
                      kept.worker_host_port, kept.started, kept.message, kept.exit_code,
                      kept.relaunched_as)


def _app(kept: StoredApp, state: ApplicationState) -> AppInfo:
    app = AppInfo(kept.id, kept.desc, None, kept.submitted, state, {}, kept.next_exec_id,
                  kept.retry_count, kept.ended)
    for e in kept.executors:
        app.executors[e.exec_id] = ExecutorInfo(kept.id, e.exec_id, e.worker_id,
                                                e.worker_host_port, e.cores, e.memory, e.state)
    return app
