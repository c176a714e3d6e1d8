"""The web UI: HTML pages of a master and a worker, rendered on the server.

Templates are in ``templates/ui/`` (jinja2, autoescaped). Pages need no JavaScript: they
refresh themselves while open (``<meta http-equiv="refresh">``) and load nothing from
elsewhere (clusters are often offline). jinja2 is imported by the first page asked for, so a
role whose UI is never opened does not carry it.

Log pages follow Spark's ``logPage``: the tail of a driver's or an executor's ``stdout`` or
``stderr``, paged backwards by byte range, downloadable whole (``/log``), and followed (the
page refreshes at the tail) while the process runs. Only Ember's own ids and the two log names
are accepted: nothing outside the work directory can be named.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from toolkit.render import templates_dir
from toolkit.runtime.states import MasterState, WorkerState
from toolkit.runtime.views import app_json, driver_json, worker_json

if TYPE_CHECKING:
    from toolkit.runtime.endpoint import Endpoint
    from toolkit.runtime.master import Master
    from toolkit.runtime.worker import Worker

REFRESH = 5
"""Seconds between a page's refreshes while open."""
LOG_PAGE = 100 * 1024
"""Bytes a log page shows (Spark's default byteLength)."""
MAX_LOG_PAGE = 1024 * 1024
_DRIVER = re.compile(r"driver-\d{14}-\d{4,}", re.ASCII)
_APP = re.compile(r"app-\d{14}-\d{4,}", re.ASCII)
_NUMBER = re.compile(r"[0-9]{1,15}")
"""A number in a query (an executor id, a byte offset): ASCII digits, not too many."""
LOG_TYPES = ("stdout", "stderr")


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir() / "ui"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def page(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(refresh=REFRESH, **context)


def _mib(value: int) -> str:
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value} MiB"


def _duration(ms: int) -> str:
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# Master ----------------------------------------------------------------------------------


def master_page(master: Master) -> str:
    workers = [worker_json(w) for w in master.workers.values()]
    alive = [w for w in workers if w["state"] == WorkerState.ALIVE]
    now = master.clock()
    by_state = {s.value: sum(w["state"] == s.value for w in workers) for s in WorkerState}
    contenders = getattr(master.store, "masters", None)
    return page(
        "master.html.j2", master=master, url=master.url, status=master.state.value,
        masters=contenders() if contenders is not None else [],
        standby=master.state != MasterState.ALIVE,
        recovery=master.config.recovery_mode, by_state=by_state, workers=workers,
        cores=sum(w["cores"] for w in alive), cores_used=sum(w["coresused"] for w in alive),
        memory=_mib(sum(w["memory"] for w in alive)),
        memory_used=_mib(sum(w["memoryused"] for w in alive)),
        active_apps=[app_json(a, now) for a in master.work.apps.values()],
        completed_apps=[app_json(a, now) for a in master.work.apps.completed],
        active_drivers=[driver_json(d) for d in master.work.drivers.values()],
        completed_drivers=[driver_json(d) for d in master.work.drivers.completed],
        webui={w.id: w.webui_url for w in master.workers.values()},
        mib=_mib, duration=_duration)


def app_page(master: Master, app_id: str, request: Any) -> str | None:
    from toolkit.runtime import session

    app = master.work.apps.get(app_id) or next(
        (a for a in master.work.apps.completed if a.id == app_id), None)
    if app is None:
        return None
    webui = {w.id: w.webui_url for w in master.workers.values()}
    return page("app.html.j2", app=app_json(app, master.clock()), desc=app.desc,
                command=_command_for(master, request),
                executors=sorted(app.executors.values(), key=lambda e: e.exec_id),
                removed=list(reversed(app.removed)),
                webui=webui, mib=_mib, duration=_duration, url=master.url,
                active=master.work.apps.get(app_id) is not None,
                logged_in=session.session(master, request) is not None,
                csrf=session.csrf(master, request))


def driver_page(master: Master, driver_id: str, request: Any) -> str | None:
    from toolkit.runtime import session

    driver = master.work.drivers.get(driver_id) or master.work.drivers.find(driver_id)
    if driver is None:
        return None
    webui = {w.id: w.webui_url for w in master.workers.values()}
    logged_in = session.session(master, request) is not None
    return page("driver.html.j2", driver=driver, entry=driver_json(driver), webui=webui,
                command=_command_for(master, request),
                mib=_mib, url=master.url, active=master.work.drivers.get(driver_id) is not None,
                logged_in=logged_in, csrf=session.csrf(master, request))


def _command_for(master: Master, request: Any) -> Any:
    """How a page shows a command: whole to whoever is logged in (anyone, without a secret);
    else the program only, as the worker's /json does, since an argument may be a
    credential and reading needs no login."""
    from toolkit.runtime import session

    if session.session(master, request) is not None:
        return " ".join
    return lambda argv: (f"{argv[0]} (arguments not shown: log in to see them)"
                         if len(argv) > 1 else argv[0])


def login_page(master: Endpoint, next_page: str, request: Any) -> str:
    from toolkit.runtime import session

    return page("login.html.j2", next=next_page if next_page.startswith("/") else "/",
                csrf=session.csrf(master, request), needed=master.keys.secret is not None)


# Worker ----------------------------------------------------------------------------------


def worker_page(worker: Worker) -> str:
    return page("worker.html.j2", worker=worker, config=worker.config,
                executors=list(worker.executors.values()),
                finished_executors=list(worker.finished_executors),
                drivers=list(worker.drivers.values()), mib=_mib)


def log_file(worker: Worker, query: dict[str, str]) -> tuple[Path, str, bool] | str:
    """The log a logPage query names, what to call it, and whether its process still runs;
    or why there is none (the query named no Ember process, or its file is gone)."""
    kind = query.get("logType", "stdout")
    if kind not in LOG_TYPES:
        return "logType must be stdout or stderr"
    driver_id, app_id, exec_id = (query.get("driverId"), query.get("appId"),
                                  query.get("executorId"))
    if driver_id is not None:
        if not _DRIVER.fullmatch(driver_id):
            return "not a driver id"
        path = worker.config.work_dir / driver_id / kind
        running = driver_id in worker.drivers
        name = f"driver {driver_id}"
    elif app_id is not None and exec_id is not None:
        if not _APP.fullmatch(app_id) or not _NUMBER.fullmatch(exec_id):
            return "not an application and executor id"
        path = worker.config.work_dir / app_id / exec_id / kind
        running = (app_id, int(exec_id)) in worker.executors
        name = f"executor {app_id}/{exec_id}"
    else:
        return "name a driverId, or an appId and an executorId"
    if not path.is_file():
        return f"no {kind} for {name} here"
    return path, f"{name} {kind}", running


def read_range(path: Path, offset: int | None, length: int) -> tuple[bytes, int, int, int]:
    """Bytes of ``path`` from ``offset`` (None: the tail), at most ``length``: the bytes, where
    they start and end, and the file's size."""
    length = max(1, min(length, MAX_LOG_PAGE))
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - length) if offset is None else max(0, min(offset, size))
        handle.seek(start)
        data = handle.read(min(length, size - start))
    return data, start, start + len(data), size


def log_page(worker: Worker, query: dict[str, str]) -> tuple[int, str]:
    found = log_file(worker, query)
    if isinstance(found, str):
        return 404, page("error.html.j2", title="No such log", message=found)
    path, name, running = found
    length = int(query["byteLength"]) if _NUMBER.fullmatch(query.get("byteLength", "")) \
        else LOG_PAGE
    offset = int(query["offset"]) if _NUMBER.fullmatch(query.get("offset", "")) else None
    data, start, end, size = read_range(path, offset, length)
    keep = {k: v for k, v in query.items() if k in ("driverId", "appId", "executorId",
                                                     "logType")}
    length = max(1, min(length, MAX_LOG_PAGE))
    at_tail = end >= size
    return 200, page(
        "log.html.j2", name=name, text=data.decode(errors="replace"), start=start, end=end,
        size=size, keep=keep, length=length, previous=max(0, start - length) if start else None,
        following=end if not at_tail else None, follow=running and at_tail,
        running=running)


def log_download(worker: Worker, query: dict[str, str]) -> Any:
    """A whole log file, as a download."""
    from aiohttp import web

    found = log_file(worker, query)
    if isinstance(found, str):
        return 404, page("error.html.j2", title="No such log", message=found)
    path, name, _ = found
    filename = name.replace(" ", "-").replace("/", "-") + ".log"
    return web.FileResponse(path, headers={
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"'})
