"""The master's table of drivers: the active ones (the waiting among them too, oldest first),
the completed ones (bounded, as Spark keeps them), and who watches which.

It changes drivers only through their transition methods (records.py) and returns what
changed; it sends nothing (the handlers do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.runtime import messages as m
from toolkit.runtime.master.store import NoStore, Store
from toolkit.runtime.master.table import Table
from toolkit.runtime.records import DriverInfo, WorkerInfo, make_id, retain
from toolkit.runtime.states import DriverState

if TYPE_CHECKING:
    from toolkit.runtime.wire import Connection


class Drivers(Table[DriverInfo]):
    """Active drivers by id, in submission order (a Mapping); ``waiting`` and ``completed``
    beside them."""

    def __init__(self, store: Store | None = None) -> None:
        super().__init__()
        self._store: Store = store or NoStore()
        self.waiting: dict[str, DriverInfo] = {}
        """SUBMITTED drivers, oldest first: what scheduling places."""
        self.completed: list[DriverInfo] = []
        self._watchers: dict[str, set[Connection]] = {}
        self._number = 0

    def find(self, driver_id: str) -> DriverInfo | None:
        """An active driver, else a completed one still retained."""
        return self._rows.get(driver_id) or next(
            (d for d in reversed(self.completed) if d.id == driver_id), None)

    # Changes -------------------------------------------------------------------------------

    def submit(self, desc: m.DriverDescription, now: float) -> DriverInfo:
        driver = DriverInfo(make_id("driver", now, self._number), desc, now)
        self._number += 1
        self._store.put_driver(driver)
        self._rows[driver.id] = self.waiting[driver.id] = driver
        return driver

    def launch(self, driver: DriverInfo, worker: WorkerInfo, now: float) -> None:
        """SUBMITTED -> RUNNING on ``worker``, which now counts it."""
        driver.launch(worker, now)
        self._store.put_driver(driver)
        del self.waiting[driver.id]
        worker.drivers[driver.id] = driver

    def finish(self, driver: DriverInfo, state: DriverState, message: str | None,
               exit_code: int | None, worker: WorkerInfo | None) -> None:
        """An active driver ends: completed, no longer counted on its worker."""
        self._rows.pop(driver.id, None)
        self.waiting.pop(driver.id, None)
        driver.finish(state, message, exit_code)
        self._store.complete_driver(driver, retain(self.completed, driver))
        if worker is not None:
            worker.drivers.pop(driver.id, None)

    def relaunch(self, driver: DriverInfo, reason: str, now: float,
                 worker: WorkerInfo | None) -> DriverInfo:
        """A supervised driver whose worker was lost: it ends RELAUNCHING and a new id takes
        its place, waiting (Spark's relaunchDriver); its watchers follow the new id."""
        new = DriverInfo(make_id("driver", now, self._number), driver.desc, now)
        self._number += 1
        driver.relaunched_as = new.id
        self.finish(driver, DriverState.RELAUNCHING, f"{reason}; relaunched as {new.id}",
                    None, worker)
        self._store.put_driver(new)
        self._rows[new.id] = self.waiting[new.id] = new
        watchers = self._watchers.get(driver.id)
        if watchers:
            self._watchers[new.id] = set(watchers)
        return new

    def clear_completed(self) -> None:
        self.completed.clear()
        self._store.forget_completed()

    def restore(self, driver: DriverInfo, worker: WorkerInfo | None) -> None:
        """A driver read back by a recovering master: waiting, running on ``worker``, or (no
        worker) running where nobody knows, for recovery to settle."""
        self._number = max(self._number, int(driver.id.rpartition("-")[2]) + 1)
        self._rows[driver.id] = driver
        if driver.state == DriverState.SUBMITTED:
            self.waiting[driver.id] = driver
        elif worker is not None:
            worker.drivers[driver.id] = driver

    def restore_completed(self, driver: DriverInfo) -> None:
        retain(self.completed, driver)

    # Watchers ------------------------------------------------------------------------------

    def watch(self, driver_id: str, conn: Connection) -> None:
        self._watchers.setdefault(driver_id, set()).add(conn)

    def to_tell(self, driver: DriverInfo) -> set[Connection]:
        """Who to tell of the driver's state now; after a final state nobody watches it."""
        if driver.id in self._rows:
            return set(self._watchers.get(driver.id, set()))
        return self._watchers.pop(driver.id, set())

    def forget(self, conn: Connection) -> None:
        """A closed connection watches nothing."""
        for driver_id, watchers in list(self._watchers.items()):
            watchers.discard(conn)
            if not watchers:
                del self._watchers[driver_id]
