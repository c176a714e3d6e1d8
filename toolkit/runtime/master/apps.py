"""The master's table of applications: the active ones (by id and by the connection of the
driver that registered them) and the completed ones (bounded).

It changes applications only through their transition methods (records.py) and returns what
changed; it sends nothing (the handlers do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.runtime import messages as m
from toolkit.runtime.master.store import NoStore, Store
from toolkit.runtime.master.table import Table
from toolkit.runtime.records import AppInfo, ExecutorInfo, make_id, retain
from toolkit.runtime.states import ApplicationState

if TYPE_CHECKING:
    from toolkit.runtime.wire import Connection


class Apps(Table[AppInfo]):
    """Active applications by id, in registration order (a Mapping); ``completed`` beside."""

    def __init__(self, store: Store | None = None) -> None:
        super().__init__()
        self._store: Store = store or NoStore()
        self._of_client: dict[Connection, list[AppInfo]] = {}
        self.completed: list[AppInfo] = []
        self._number = 0

    def wanting(self) -> list[AppInfo]:
        """Applications that still want cores, oldest first (FIFO, as Spark); not one whose
        program is away (UNKNOWN): nobody would hear of its executors."""
        return [a for a in self._rows.values()
                if a.cores_left > 0 and a.state != ApplicationState.UNKNOWN]

    # Changes -------------------------------------------------------------------------------

    def register(self, desc: m.ApplicationDescription, conn: Connection, now: float) -> AppInfo:
        app = AppInfo(make_id("app", now, self._number), desc, conn, now)
        self._number += 1
        self._store.put_app(app)
        self._rows[app.id] = app
        self._of_client.setdefault(conn, []).append(app)
        return app

    def end(self, app: AppInfo, state: ApplicationState, now: float) -> list[ExecutorInfo]:
        """An active application ends: completed; its executors (returned) are its no more."""
        self._rows.pop(app.id, None)
        others = self._of_client.get(app.conn) if app.conn is not None else None
        if others is not None and app in others:
            others.remove(app)
        executors = list(app.executors.values())
        for executor in executors:
            app.remove_executor(executor)
        app.end(state, now)
        self._store.complete_app(app, retain(self.completed, app))
        return executors

    def save(self, app: AppInfo) -> None:
        """Its executors changed: what a new leader would read is brought up to date."""
        if app.id in self._rows:
            self._store.put_app(app)

    def restore(self, app: AppInfo) -> None:
        """An application read back by a recovering master (UNKNOWN, no link)."""
        self._number = max(self._number, int(app.id.rpartition("-")[2]) + 1)
        self._rows[app.id] = app

    def restore_completed(self, app: AppInfo) -> None:
        retain(self.completed, app)

    def reattach(self, app: AppInfo, conn: Connection) -> None:
        """Its driver program came back on ``conn``."""
        app.reattach(conn)
        self._of_client.setdefault(conn, []).append(app)
        self._store.put_app(app)

    def relink(self, app: AppInfo, conn: Connection) -> None:
        """Its driver program moved to ``conn`` while its old link was still up here."""
        if app.conn is not None:
            others = self._of_client.get(app.conn, [])
            if app in others:
                others.remove(app)
        app.conn = conn
        self._of_client.setdefault(conn, []).append(app)

    def of_client(self, conn: Connection) -> list[AppInfo]:
        """The active applications a closed connection had registered (then forgotten)."""
        return [a for a in self._of_client.pop(conn, []) if a.id in self._rows]

    def clear_completed(self) -> None:
        self.completed.clear()
        self._store.forget_completed()
