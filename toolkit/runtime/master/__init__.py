"""The master: one endpoint that owns its tables.

- endpoint.py: ``Master``, the endpoint: its handler table, worker membership and liveness,
  its lifecycle. It owns the workers table and its ``work``.
- work.py: ``Work``, the drivers, applications and executors part: their tables, their
  handlers, scheduling, launching; made by the endpoint with what it needs, not a half of it.
- workers.py, drivers.py, apps.py: the tables (table.py: what they share). They change records
  only through the records' transition methods (toolkit/runtime/records.py) and send nothing.
"""

from toolkit.runtime.master.endpoint import REAPER_ITERATIONS, Master

__all__ = ["REAPER_ITERATIONS", "Master"]
