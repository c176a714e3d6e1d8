"""The master's table of workers: by id, the live ones by address and by connection.

The table changes its records only through their transition methods (records.py) and keeps its
indexes true with every change; it returns what changed and sends nothing (the handlers do).
Every lookup a handler makes per message is a dictionary lookup, so a message costs the same
with 5,000 workers as with 5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.runtime.master.store import NoStore, Store
from toolkit.runtime.master.table import Table
from toolkit.runtime.records import WorkerInfo
from toolkit.runtime.states import WorkerState

if TYPE_CHECKING:
    from toolkit.runtime.wire import Connection


class Workers(Table[WorkerInfo]):
    """Every listed worker by id (DEAD ones too, until culled); the ones that are not DEAD by
    RPC address (Spark's addressToWorker) and by the connection they registered on."""

    def __init__(self, store: Store | None = None) -> None:
        super().__init__()
        self._store: Store = store or NoStore()
        self._live_at: dict[str, WorkerInfo] = {}
        self._live_on: dict[Connection, WorkerInfo] = {}
        self._dead_at: dict[str, set[str]] = {}

    # Lookups -------------------------------------------------------------------------------

    def live(self, worker_id: str) -> WorkerInfo | None:
        """The worker with this id, unless it is DEAD (or unknown)."""
        worker = self._rows.get(worker_id)
        return worker if worker is not None and worker.state != WorkerState.DEAD else None

    def live_at(self, address: str) -> WorkerInfo | None:
        return self._live_at.get(address)

    def on(self, conn: Connection | None) -> WorkerInfo | None:
        """The live worker whose link is ``conn``."""
        return self._live_on.get(conn) if conn is not None else None

    def living(self) -> list[WorkerInfo]:
        """The workers that are not DEAD, in registration order."""
        return list(self._live_at.values())

    # Changes -------------------------------------------------------------------------------

    def restore(self, worker: WorkerInfo) -> None:
        """A worker read back by a recovering master (UNKNOWN, no link): listed, not rewritten."""
        self._rows[worker.id] = worker
        self._live_at[worker.address] = worker

    def drop_dead_at(self, address: str) -> list[WorkerInfo]:
        """The DEAD records at ``address`` leave the table (a new worker registers there)."""
        return [self._rows.pop(i) for i in self._dead_at.pop(address, set())
                if i in self._rows]

    def add(self, worker: WorkerInfo) -> None:
        """List a new ALIVE worker. No live worker may hold its address: the caller removes
        or refuses that one first."""
        if worker.address in self._live_at:
            raise ValueError(f"{worker.address} is held by {self._live_at[worker.address].id}")
        self._store.put_worker(worker)
        self._rows[worker.id] = worker
        self._live_at[worker.address] = worker
        if worker.conn is not None:
            self._live_on[worker.conn] = worker

    def reattach(self, worker: WorkerInfo, conn: Connection) -> Connection | None:
        """A listed worker that is not DEAD registered again on ``conn``; its old link, if it
        had another, is returned (the caller closes it)."""
        old = worker.conn
        if old is not None:
            self._live_on.pop(old, None)
        worker.reattach(conn)
        self._live_on[conn] = worker
        return old if old is not conn else None

    def detach(self, worker: WorkerInfo) -> None:
        """Its link closed: the worker stays listed, ALIVE, with its work, but is found by no
        connection until it registers again (or its heartbeats time out)."""
        if worker.conn is not None and self._live_on.get(worker.conn) is worker:
            del self._live_on[worker.conn]
        worker.conn = None

    def remove(self, worker: WorkerInfo, reason: str) -> None:
        """ALIVE (or UNKNOWN) -> DEAD: still listed by id, no longer at its address."""
        worker.die(reason)
        self._store.forget_worker(worker.id)
        if self._live_at.get(worker.address) is worker:
            del self._live_at[worker.address]
        if worker.conn is not None and self._live_on.get(worker.conn) is worker:
            del self._live_on[worker.conn]
        self._dead_at.setdefault(worker.address, set()).add(worker.id)

    def cull(self, worker: WorkerInfo) -> None:
        """A DEAD worker listed long enough (Spark's reaper) leaves the table."""
        if worker.state != WorkerState.DEAD:
            raise ValueError(f"worker {worker.id} is {worker.state}: only a DEAD one is culled")
        del self._rows[worker.id]
        self._dead_at.get(worker.address, set()).discard(worker.id)
