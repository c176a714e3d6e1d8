"""The master's work: drivers, applications and their executors.

``Work`` is a part of the master endpoint, not a half of it: it owns the drivers and
applications tables, reads the workers table through its public methods, and is handed what it
needs from the endpoint (its config, clock, URL and state) when it is made. Its handlers are
synchronous like all of the master's and run on the same inbox; the endpoint's handler table
lists them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from toolkit.runtime import messages as m
from toolkit.runtime import scheduling
from toolkit.runtime.master.apps import Apps
from toolkit.runtime.master.drivers import Drivers
from toolkit.runtime.master.replies import acked, check_driver, reply
from toolkit.runtime.master.store import Store
from toolkit.runtime.records import AppInfo, DriverInfo, ExecutorInfo
from toolkit.runtime.states import (
    FINISHED_EXECUTOR_STATES,
    REPORTED_DRIVER_ENDS,
    ApplicationState,
    DriverState,
    ExecutorState,
    MasterState,
    WorkerState,
)

if TYPE_CHECKING:
    from toolkit.runtime.config import MasterConfig
    from toolkit.runtime.endpoint import Handler
    from toolkit.runtime.master.workers import Workers
    from toolkit.runtime.records import WorkerInfo
    from toolkit.runtime.wire import Connection

logger = logging.getLogger("toolkit.runtime.master")

ClientRequest = (m.RequestSubmitDriver | m.RequestKillDriver | m.RequestDriverStatus
                 | m.RequestKillAllDrivers | m.RequestClearCompletedDriversAndApps
                 | m.RequestDriverList | m.RegisterApplication)


class Work:
    """Takes submissions, places work with scheduling.py's pure functions, launches it on
    workers, follows what they report and answers clients."""

    def __init__(self, config: MasterConfig, workers: Workers, clock: Callable[[], float],
                 url: Callable[[], str], state: Callable[[], MasterState],
                 store: Store | None = None) -> None:
        self.config = config
        self.workers = workers
        self.clock = clock
        self._url = url
        self._state = state
        self.drivers = Drivers(store)
        self.apps = Apps(store)
        self.shuffle: Callable[[list[scheduling.WorkerOffer]], None] = random.shuffle

    def handlers(self) -> dict[type[m.Message], Handler]:
        return {
            m.RequestSubmitDriver: self.on_request_submit_driver,
            m.RequestKillDriver: self.on_request_kill_driver,
            m.RequestDriverStatus: self.on_request_driver_status,
            m.RequestKillAllDrivers: self.on_request_kill_all_drivers,
            m.RequestClearCompletedDriversAndApps: self.on_request_clear_completed_drivers_and_apps,
            m.RequestDriverList: self.on_request_driver_list,
            m.DriverStateChanged: self.on_driver_state_changed,
            m.ExecutorStateChanged: self.on_executor_state_changed,
            m.WorkerLatestState: self.on_worker_latest_state,
            m.RegisterApplication: self.on_register_application,
            m.UnregisterApplication: self.on_unregister_application,
            m.ReconnectApplication: self.on_reconnect_application,
        }

    # What the membership side tells it -----------------------------------------------------

    def forget_client(self, conn: Connection, reset: bool = False) -> list[AppInfo]:
        """A connection closed: it watches nothing more; its applications end as FAILED, or,
        when the link was reset on the way, wait UNKNOWN for their program (returned)."""
        self.drivers.forget(conn)
        apps = self.apps.of_client(conn)
        if reset:
            for app in apps:
                app.detach()
                self.apps.save(app)
                logger.warning("Application %s's link was reset; waiting for its driver "
                               "program to come back", app.id)
            return apps
        for app in apps:
            logger.warning("Application %s's driver disconnected without unregistering",
                           app.id)
            self.end_app(app, ApplicationState.FAILED,
                          "the driver disconnected without unregistering")
        if apps:
            self.schedule()
        return []

    def lose_work(self, worker: WorkerInfo) -> None:
        """A worker is gone: its executors are LOST (apps told), its drivers relaunched when
        supervised, else ERROR."""
        reason = worker.removed_reason or "worker lost"
        told: set[str] = set()
        for executor in list(worker.executors.values()):
            app = self.apps.get(executor.app_id)
            self._lose_executor(worker, executor, "worker lost")
            if app is not None and app.conn is not None and app.id not in told:
                told.add(app.id)
                app.conn.send(m.WorkerRemoved(worker.id, worker.host, reason))
        for driver in list(worker.drivers.values()):
            self.lose_driver(driver, f"worker {worker.id} lost: {reason}")

    # Recovery (recovery.py reads the records back and settles what did not return) -----

    def unknown_apps(self) -> list[AppInfo]:
        return [a for a in self.apps.values() if a.state == ApplicationState.UNKNOWN]

    # Drivers: submission clients -----------------------------------------------------------

    def on_request_submit_driver(self, msg: m.RequestSubmitDriver,
                                 conn: Connection | None) -> None:
        if self._not_leading(msg, conn):
            return
        response, driver = self._submit(msg.desc)
        if conn is None:
            return
        if driver is not None and msg.watch:
            self.drivers.watch(driver.id, conn)
        conn.send(reply(response, msg.request_id))
        if driver is not None:
            self.schedule()

    def on_request_kill_driver(self, msg: m.RequestKillDriver, conn: Connection | None) -> None:
        if self._not_leading(msg, conn):
            return
        response = self.kill_driver(msg.driver_id)
        if conn is not None:
            conn.send(reply(response, msg.request_id))

    def on_request_driver_status(self, msg: m.RequestDriverStatus,
                                 conn: Connection | None) -> None:
        if self._not_leading(msg, conn):
            return
        status = self.driver_status(msg.driver_id)
        if conn is None:
            return
        conn.send(reply(status, msg.request_id))
        if msg.watch and status.found and msg.driver_id in self.drivers:
            self.drivers.watch(msg.driver_id, conn)

    def on_request_kill_all_drivers(self, msg: m.RequestKillAllDrivers,
                                    conn: Connection | None) -> None:
        if self._not_leading(msg, conn):
            return
        response = self.kill_all_drivers()
        if conn is not None:
            conn.send(reply(response, msg.request_id))

    def on_request_clear_completed_drivers_and_apps(
            self, msg: m.RequestClearCompletedDriversAndApps, conn: Connection | None) -> None:
        if self._not_leading(msg, conn):
            return
        response = self.clear_completed()
        if conn is not None:
            conn.send(reply(response, msg.request_id))

    def on_request_driver_list(self, msg: m.RequestDriverList, conn: Connection | None) -> None:
        if self._not_leading(msg, conn):
            return
        if conn is not None:
            every = [d for d in (*self.drivers.completed, *self.drivers.values())
                     if msg.scope is None or d.seen_by(msg.scope)]
            conn.send(m.DriverListResponse([d.status() for d in every],
                                           in_reply_to=msg.request_id))

    # Drivers and executors: worker reports -------------------------------------------------

    @acked
    def on_driver_state_changed(self, msg: m.DriverStateChanged, conn: Connection | None) -> None:
        driver = self.drivers.get(msg.driver_id)
        worker = self.workers.on(conn)
        if driver is None or worker is None or driver.worker_id != worker.id:
            logger.debug("Ignoring %s of driver %s (not running there)", msg.state,
                         msg.driver_id)
            return
        state = msg.state  # a DriverState: anything else was refused when it was decoded
        if state == DriverState.RUNNING:  # already RUNNING since the master launched it
            return
        if state not in REPORTED_DRIVER_ENDS:
            logger.warning("Ignoring state %r reported for driver %s", msg.state, driver.id)
            return
        logger.info("Driver %s is %s%s", driver.id, state, f": {msg.message}" if msg.message
                    else "")
        self._end_driver(driver, state, msg.message or None, msg.exit_code)
        self.schedule()

    @acked
    def on_executor_state_changed(self, msg: m.ExecutorStateChanged,
                                  conn: Connection | None) -> None:
        app = self.apps.get(msg.app_id)
        executor = app.executors.get(msg.exec_id) if app is not None else None
        worker = self.workers.on(conn)
        if app is None or executor is None or worker is None or executor.worker_id != worker.id:
            logger.debug("Ignoring %s of executor %s/%d (not running there)", msg.state,
                         msg.app_id, msg.exec_id)
            return
        state = msg.state
        if state in (ExecutorState.LAUNCHING, ExecutorState.LOST):
            logger.warning("Ignoring state %r reported for executor %s/%d", msg.state, app.id,
                           executor.exec_id)
            return
        if not executor.may_move(state):
            logger.warning("Ignoring %s reported for executor %s/%d, which is %s", state,
                           app.id, executor.exec_id, executor.state)
            return
        executor.move(state)
        if state == ExecutorState.RUNNING:
            executor.running_since = self.clock()
        self.apps.save(app)
        if app.conn is not None:
            app.conn.send(m.ExecutorUpdated(executor.exec_id, state, msg.message,
                                            msg.exit_code))
        if state not in FINISHED_EXECUTOR_STATES:
            return
        logger.info("Executor %s/%d is %s: %s", app.id, executor.exec_id, state, msg.message)
        executor.exit_code = msg.exit_code
        app.remove_executor(executor)
        self.apps.save(app)
        worker.executors.pop(executor.key, None)
        if state == ExecutorState.FAILED or (state == ExecutorState.EXITED
                                             and msg.exit_code != 0):
            app.count_failure(executor, self.clock())
            if (app.retry_count >= self.config.max_executor_retries
                    and not any(app.running())):
                logger.error("Application %s failed %d times with no executor running; "
                             "removing it", app.id, app.retry_count)
                self.end_app(app, ApplicationState.FAILED,
                              f"{app.retry_count} executors failed")
        self.schedule()

    def on_worker_latest_state(self, msg: m.WorkerLatestState, conn: Connection | None) -> None:
        """Reconcile with what a (re)registered worker runs: kill what this master does not
        know of; what it launched there before this registration and the worker no longer
        runs was lost (its final state, if any, came first: the worker resends those before
        this report)."""
        worker = self.workers.live(msg.worker_id)
        if worker is None or worker.conn is None or worker.conn is not conn:
            return
        if msg.registration != worker.epoch:  # it answers an earlier registration
            logger.info("Ignoring worker %s's report for registration %d (now %d)", worker.id,
                        msg.registration, worker.epoch)
            return
        runs = set(msg.driver_ids)
        for driver in list(worker.drivers.values()):
            if driver.epoch < worker.epoch and driver.id not in runs:
                self.lose_driver(driver, f"worker {worker.id} no longer runs it")
        running = {(ref.app_id, ref.exec_id) for ref in msg.executors}
        for key, executor in list(worker.executors.items()):
            if executor.epoch < worker.epoch and key not in running:
                self._lose_executor(worker, executor, f"worker {worker.id} no longer runs it")
        for ref in msg.executors:
            if (ref.app_id, ref.exec_id) not in worker.executors:
                logger.warning("Worker %s runs unknown executor %s/%d; killing it", worker.id,
                               ref.app_id, ref.exec_id)
                worker.conn.send(m.KillExecutor(self._url(), ref.app_id, ref.exec_id))
        for driver_id in msg.driver_ids:
            known = worker.drivers.get(driver_id)
            if known is None:
                logger.warning("Worker %s runs unknown driver %s; killing it", worker.id,
                               driver_id)
            if known is None or known.kill_asked:  # a kill a reset link may have lost
                worker.conn.send(m.KillDriver(driver_id))
        self.schedule()

    # Applications --------------------------------------------------------------------------

    def on_register_application(self, msg: m.RegisterApplication,
                                conn: Connection | None) -> None:
        if conn is None or self._not_leading(msg, conn):
            return
        app = self.apps.register(msg.desc, conn, self.clock())
        logger.info("Registered app %s with ID %s", msg.desc.name, app.id)
        conn.send(m.RegisteredApplication(app.id, self._url(), in_reply_to=msg.request_id))
        self.schedule()

    def on_reconnect_application(self, msg: m.ReconnectApplication,
                                 conn: Connection | None) -> None:
        """A driver program whose master went asks this one to take its application back;
        a recovering master takes it (a standby says NotLeader)."""
        if conn is None:
            return
        if self._state() == MasterState.STANDBY:
            conn.send(m.NotLeader(self._url(), self._state().value, in_reply_to=msg.request_id))
            return
        app = self.apps.get(msg.app_id)
        if app is not None and app.conn is not None and app.conn is not conn:
            # its program left a link this master still holds (a check it did not answer
            # in time): the new link replaces it
            self.apps.relink(app, conn)
            conn.send(m.RegisteredApplication(app.id, self._url(), in_reply_to=msg.request_id))
            return
        if app is None or app.state != ApplicationState.UNKNOWN:
            conn.send(m.ApplicationRemoved(f"application {msg.app_id} is not known here",
                                           in_reply_to=msg.request_id))
            return
        self.apps.reattach(app, conn)
        logger.info("Application %s is back", app.id)
        conn.send(m.RegisteredApplication(app.id, self._url(), in_reply_to=msg.request_id))
        self.schedule()

    def on_unregister_application(self, msg: m.UnregisterApplication,
                                  conn: Connection | None) -> None:
        app = self.apps.get(msg.app_id)
        if app is not None and app.conn is conn:
            logger.info("Received unregister request from application %s", app.id)
            self.end_app(app, ApplicationState.FINISHED, None)
            self.schedule()

    # Answers, for the handlers above (REST reaches them through the inbox too: ask) -------

    def kill_driver(self, driver_id: str) -> m.KillDriverResponse:
        if self._state() != MasterState.ALIVE:
            return m.KillDriverResponse(driver_id, False, self._not_alive("kill drivers"))
        driver = self.drivers.get(driver_id)
        if driver is None:
            done = self.drivers.find(driver_id)
            if done is not None and done.relaunched_as:
                return m.KillDriverResponse(driver_id, False,
                                            f"Driver {driver_id} was relaunched as "
                                            f"{done.relaunched_as}; kill that one")
            return m.KillDriverResponse(driver_id, False,
                                        f"Driver {driver_id} has already finished or does not "
                                        f"exist")
        logger.info("Asked to kill driver %s", driver_id)
        worker = self.workers.get(driver.worker_id or "")
        if driver.state == DriverState.SUBMITTED or worker is None:
            self._end_driver(driver, DriverState.KILLED, "killed before it ran")
        elif worker.conn is None:  # running on a worker whose link is down for now
            return m.KillDriverResponse(driver_id, False,
                                        f"Driver {driver_id} runs on worker {worker.id}, whose "
                                        f"link to the master is down; ask again when it is back")
        else:
            driver.kill_asked = True
            worker.conn.send(m.KillDriver(driver_id))
        return m.KillDriverResponse(driver_id, True,
                                    f"Kill request for {driver_id} submitted")

    def driver_status(self, driver_id: str) -> m.DriverStatusResponse:
        if self._state() != MasterState.ALIVE:
            return m.DriverStatusResponse(driver_id, False,
                                          message=self._not_alive("report driver status"))
        driver = self.drivers.find(driver_id)
        if driver is None:
            return m.DriverStatusResponse(driver_id, False,
                                          message=f"Driver {driver_id} not found")
        return driver.status()

    def kill_all_drivers(self) -> m.KillAllDriversResponse:
        if self._state() != MasterState.ALIVE:
            return m.KillAllDriversResponse(False, self._not_alive("kill drivers"))
        for driver_id in list(self.drivers):
            self.kill_driver(driver_id)
        return m.KillAllDriversResponse(True, "Kill request for all drivers submitted")

    def clear_completed(self) -> m.ClearCompletedDriversAndAppsResponse:
        if self._state() != MasterState.ALIVE:
            return m.ClearCompletedDriversAndAppsResponse(
                False, self._not_alive("clear completed drivers and applications"))
        self.drivers.clear_completed()
        self.apps.clear_completed()
        return m.ClearCompletedDriversAndAppsResponse(
            True, "Cleared completed drivers and applications")

    # Scheduling ----------------------------------------------------------------------------

    def schedule(self) -> None:
        """Place waiting drivers, then executors for apps that want cores (scheduling.py)."""
        if self._state() != MasterState.ALIVE:
            return
        waiting = list(self.drivers.waiting.values())
        wanting = self.apps.wanting()
        if not waiting and not wanting:
            return
        offers = [scheduling.WorkerOffer(w.id, w.cores_free, w.memory_free)
                  for w in self.workers.living()
                  if w.state == WorkerState.ALIVE and w.conn is not None and w.cores_free > 0]
        if not offers:  # everything needs a core: a full cluster has nothing to decide
            return
        drivers = [scheduling.DriverRequest(d.id, d.desc.cores, d.desc.memory) for d in waiting]
        apps = [scheduling.AppRequest(a.id, a.desc.memory_per_executor,
                                      a.desc.cores_per_executor, a.cores_left)
                for a in wanting]
        to_drivers, to_executors = scheduling.schedule(drivers, apps, offers,
                                                       self.config.spread_out, self.shuffle)
        for placement in to_drivers:
            self._launch_driver(self.workers[placement.worker_id],
                                self.drivers[placement.request_id])
        for placement in to_executors:
            self._launch_executor(self.workers[placement.worker_id],
                                  self.apps[placement.request_id], placement.cores)

    def _launch_driver(self, worker: WorkerInfo, driver: DriverInfo) -> None:
        logger.info("Launching driver %s on worker %s", driver.id, worker.id)
        self.drivers.launch(driver, worker, self.clock())
        if worker.conn is not None:
            worker.conn.send(m.LaunchDriver(driver.id, driver.desc))
        self._tell_watchers(driver)

    def _launch_executor(self, worker: WorkerInfo, app: AppInfo, cores: int) -> None:
        executor = app.add_executor(worker.id, worker.address, cores)
        executor.epoch = worker.epoch
        worker.executors[executor.key] = executor
        app.start()
        self.apps.save(app)
        logger.info("Launching executor %s/%d on worker %s", app.id, executor.exec_id,
                    worker.id)
        if worker.conn is not None:
            worker.conn.send(m.LaunchExecutor(self._url(), app.id, executor.exec_id,
                                              app.desc, cores, executor.memory))
        if app.conn is not None:
            app.conn.send(m.ExecutorAdded(executor.exec_id, worker.id, worker.address, cores,
                                          executor.memory))

    # Helpers ---------------------------------------------------------------------------------

    def _submit(self, desc: m.DriverDescription) -> tuple[m.SubmitDriverResponse,
                                                          DriverInfo | None]:
        if self._state() != MasterState.ALIVE:
            return m.SubmitDriverResponse(False, None, self._not_alive("submit drivers")), None
        problem = check_driver(desc)
        if problem:
            return m.SubmitDriverResponse(False, None, problem), None
        driver = self.drivers.submit(desc, self.clock())
        logger.info("Driver submitted %s: %s", driver.id, desc.name or desc.command[0])
        return m.SubmitDriverResponse(True, driver.id,
                                      f"Driver successfully submitted as {driver.id}"), driver

    def _end_driver(self, driver: DriverInfo, state: DriverState, message: str | None,
                    exit_code: int | None = None) -> None:
        self.drivers.finish(driver, state, message, exit_code,
                            self.workers.get(driver.worker_id or ""))
        self._tell_watchers(driver)

    def lose_driver(self, driver: DriverInfo, reason: str) -> None:
        if not driver.desc.supervise:
            self._end_driver(driver, DriverState.ERROR, reason)
            return
        new = self.drivers.relaunch(driver, reason, self.clock(),
                                    self.workers.get(driver.worker_id or ""))
        self._tell_watchers(driver)
        logger.info("Relaunching supervised driver %s as %s", driver.id, new.id)

    def _tell_watchers(self, driver: DriverInfo) -> None:
        status = driver.status()
        for conn in self.drivers.to_tell(driver):
            conn.send(status)

    def end_app(self, app: AppInfo, state: ApplicationState, message: str | None) -> None:
        logger.info("Removing app %s: %s", app.id, state)
        for executor in self.apps.end(app, state, self.clock()):
            worker = self.workers.get(executor.worker_id)
            if worker is not None:
                worker.executors.pop(executor.key, None)
                if worker.conn is not None:
                    worker.conn.send(m.KillExecutor(self._url(), app.id, executor.exec_id))
        if state != ApplicationState.FINISHED and app.conn is not None:
            app.conn.send(m.ApplicationRemoved(message or state.value))
        for worker in self.workers.living():
            if worker.conn is not None:
                worker.conn.send(m.ApplicationFinished(app.id))

    def _lose_executor(self, worker: WorkerInfo, executor: ExecutorInfo, reason: str) -> None:
        worker.executors.pop(executor.key, None)
        app = self.apps.get(executor.app_id)
        if app is None:
            return
        executor.move(ExecutorState.LOST)
        app.remove_executor(executor)
        self.apps.save(app)
        if app.conn is not None:
            app.conn.send(m.ExecutorUpdated(executor.exec_id, ExecutorState.LOST, reason,
                                            None, True))

    def _not_leading(self, msg: ClientRequest, conn: Connection | None) -> bool:
        """Not ALIVE (a standby, or still recovering): the client is told to ask the leader,
        and nothing is done here. True if so."""
        if self._state() == MasterState.ALIVE:
            return False
        if conn is not None:
            conn.send(m.NotLeader(self._url(), self._state().value,
                                  in_reply_to=msg.request_id))
        return True

    def _not_alive(self, what: str) -> str:
        return (f"Current state is not alive: {self._state().value}. Can only {what} in ALIVE "
                f"state.")
