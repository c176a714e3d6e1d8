"""The JSON shapes of a master's records, as Spark's JsonProtocol writes them: the web UI's
/json (http.py) and its pages (pages.py) both show them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.runtime.records import java_date

if TYPE_CHECKING:
    from toolkit.runtime.records import AppInfo, DriverInfo, WorkerInfo


def worker_json(worker: WorkerInfo) -> dict[str, Any]:
    """One entry of the master's ``workers`` list (Spark's JsonProtocol.writeWorkerInfo)."""
    return {
        "id": worker.id,
        "host": worker.host,
        "port": worker.port,
        "webuiaddress": worker.webui_url,
        "cores": worker.cores,
        "coresused": worker.cores_used,
        "coresfree": worker.cores_free,
        "memory": worker.memory,
        "memoryused": worker.memory_used,
        "memoryfree": worker.memory_free,
        "resources": {},
        "resourcesused": {},
        "resourcesfree": {},
        "state": worker.state.value,
        "lastheartbeat": int(worker.last_heartbeat * 1000),
    }


def driver_json(driver: DriverInfo) -> dict[str, Any]:
    """One entry of ``activedrivers``/``completeddrivers`` (JsonProtocol.writeDriverInfo).

    Spark writes ``starttime`` as a string of epoch milliseconds; so does Ember.
    """
    return {
        "id": driver.id,
        "starttime": str(int((driver.started or driver.submitted) * 1000)),
        "state": driver.state.value,
        "cores": driver.desc.cores,
        "memory": driver.desc.memory,
        "resources": {},
        "submitdate": java_date(driver.submitted),
        "worker": driver.worker_id or "None",
        "mainclass": driver.main_class,
    }


def app_json(app: AppInfo, now: float) -> dict[str, Any]:
    """One entry of ``activeapps``/``completedapps`` (JsonProtocol.writeApplicationInfo)."""
    return {
        "id": app.id,
        "starttime": int(app.submitted * 1000),
        "name": app.desc.name,
        "cores": app.requested_cores,
        "user": app.desc.user,
        "memoryperexecutor": app.desc.memory_per_executor,
        "memoryperslave": app.desc.memory_per_executor,
        "resourcesperexecutor": [],
        "resourcesperslave": [],
        "submitdate": java_date(app.submitted),
        "state": app.state.value,
        "duration": int(((app.ended or now) - app.submitted) * 1000),
    }
