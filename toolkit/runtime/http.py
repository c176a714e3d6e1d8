"""The HTTP side of each process: ``/json`` (Spark's field names), ``/json/<field>``, ``/readyz``.

aiohttp is imported only when the server starts, after the RPC side is up, so that a master
accepts connections and a worker registers without waiting for it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from toolkit.errors import ConfigError
from toolkit.runtime.records import DEFAULT_CORES
from toolkit.runtime.states import MasterState, WorkerState
from toolkit.runtime.views import app_json, driver_json, worker_json

if TYPE_CHECKING:
    from aiohttp import web

    from toolkit.runtime.httpguard import TlsSource
    from toolkit.runtime.master import Master
    from toolkit.runtime.runners import ExecutorRunner
    from toolkit.runtime.worker import Worker


def master_json(master: Master) -> dict[str, Any]:
    """The master's state as Spark's ``/json`` shows it (JsonProtocol.writeMasterState)."""
    alive = [w for w in master.workers.values() if w.state == WorkerState.ALIVE]
    now = master.clock()
    return {
        "url": master.url,
        "workers": [worker_json(w) for w in master.workers.values()],
        "aliveworkers": len(alive),
        "cores": sum(w.cores for w in alive),
        "coresused": sum(w.cores_used for w in alive),
        "memory": sum(w.memory for w in alive),
        "memoryused": sum(w.memory_used for w in alive),
        "resources": [{} for _ in alive],
        "resourcesused": [{} for _ in alive],
        "activeapps": [app_json(a, now) for a in master.work.apps.values()],
        "completedapps": [app_json(a, now) for a in master.work.apps.completed],
        "activedrivers": [driver_json(d) for d in master.work.drivers.values()],
        "completeddrivers": [driver_json(d) for d in master.work.drivers.completed],
        "status": master.state.value,
    }


def worker_state_json(worker: Worker) -> dict[str, Any]:
    """The worker's state as Spark's worker ``/json`` shows it (JsonProtocol.writeWorkerState).
    With a cluster secret, executors' arguments are not shown: /json needs no login, and an
    argument may be a credential."""
    hidden = worker.secret is not None
    return {
        "id": worker.id,
        "masterurl": worker.master_url,
        "masterwebuiurl": worker.master_webui_url,
        "cores": worker.config.cores,
        "coresused": worker.cores_used,
        "memory": worker.config.memory,
        "memoryused": worker.memory_used,
        "resources": {},
        "resourcesused": {},
        "executors": [executor_json(r, hidden) for r in worker.executors.values()],
        "finishedexecutors": [executor_json(r, hidden) for r in worker.finished_executors],
    }


def executor_json(runner: ExecutorRunner, hidden: bool = False) -> dict[str, Any]:
    """One entry of a worker's ``executors`` (JsonProtocol.writeExecutorRunner); ``hidden``:
    the program only, not its arguments."""
    desc = runner.desc
    command = (f"{desc.command[0]} (arguments not shown)" if hidden and len(desc.command) > 1
               else " ".join(desc.command))
    return {
        "id": runner.exec_id,
        "memory": runner.memory,
        "resources": {},
        "appid": runner.app_id,
        "appdesc": {
            "name": desc.name,
            "cores": desc.max_cores or DEFAULT_CORES,
            "memoryperexecutor": desc.memory_per_executor,
            "memoryperslave": desc.memory_per_executor,
            "user": desc.user,
            "command": command,
        },
        "state": runner.state,
    }


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2)


class HttpServer:
    """One aiohttp application on the process's web UI port."""

    def __init__(self, role: str, state: Any, ready: Any, connections: int = 256,
                 tls: TlsSource = None, metrics: dict[str, Any] | None = None,
                 pages: dict[str, Any] | None = None,
                 actions: dict[str, Any] | None = None,
                 endpoint: Any = None) -> None:
        self.role = role
        self.tls = tls
        self.metrics = metrics or {}
        """Prometheus paths -> what makes their text (imported at the first scrape)."""
        self.pages = pages or {}
        """UI paths -> what renders them from pages.py, the query and the request (None: not
        found)."""
        self.actions = actions or {}
        """UI forms' paths (POST) -> what does them (actions.py)."""
        self.endpoint = endpoint
        self.login_to_read = False
        """--ui-login always: every page and /json need a login (with a secret)."""
        self.connections = connections
        self._state = state
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    @staticmethod
    def preload() -> None:
        """Import aiohttp (about 0.2 s of CPU); run in a thread while the RPC side starts."""
        import aiohttp.web  # noqa: F401

    async def start(self, host: str, port: int) -> int:
        from aiohttp import web

        from toolkit.runtime import httpguard

        app = web.Application(client_max_size=64 * 1024)  # it takes GETs only
        app.router.add_get("/json", self._json)
        app.router.add_get("/json/", self._json)
        app.router.add_get("/json/{field}", self._json_field)
        app.router.add_get("/readyz", self._readyz)
        for path in self.metrics:
            app.router.add_get(path, self._metrics)
        for path in self.pages:
            app.router.add_get(path, self._page)
        for path in self.actions:
            app.router.add_post(path, self._action)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     **httpguard.RUNNER_LIMITS)
        await self._runner.setup()
        try:
            self._server = await httpguard.serve(self._runner, host, port,
                                                 f"{self.role} web UI", self.connections,
                                                 self.tls)
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"{self.role} web UI cannot listen on {host}:{port}: "
                              f"{exc.strerror} (choose another with --webui-port)") from None
        sockets = list(self._server.sockets or ())
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _require_login(self, request: web.Request) -> None:
        """With --ui-login always and a secret: a reader not logged in goes to the login page."""
        if not self.login_to_read or request.path == "/login":
            return
        from aiohttp import web

        from toolkit.runtime import session

        if not session.allowed_to_read(self.endpoint, request):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")

    async def _json(self, request: web.Request) -> web.Response:
        from aiohttp import web

        self._require_login(request)
        return web.json_response(self._state(), dumps=_dumps)

    async def _json_field(self, request: web.Request) -> web.Response:
        from aiohttp import web

        self._require_login(request)
        field = request.match_info["field"]
        state = self._state()
        if field not in state:
            return web.json_response({"error": f"no field {field!r}; fields: {sorted(state)}"},
                                     status=404, dumps=_dumps)
        return web.json_response({field: state[field]}, dumps=_dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        from toolkit.runtime import metrics  # prometheus-client: loaded by the first scrape

        text = self.metrics[request.path](metrics)
        return web.Response(body=text, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _page(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        from toolkit.runtime import pages  # jinja2: loaded by the first page asked for

        self._require_login(request)
        found = self.pages[request.path](pages, dict(request.query), request)
        if isinstance(found, web.StreamResponse):
            return found
        status, html = found if isinstance(found, tuple) else (
            (200, found) if found is not None else (404, pages.page(
                "error.html.j2", title="Not found", message="Nothing of that id here.")))
        return web.Response(text=html, status=status, content_type="text/html",
                            headers={"X-Frame-Options": "DENY", "Content-Security-Policy":
                                     "default-src 'none'; style-src 'unsafe-inline'; "
                                     "img-src 'self' data:; frame-ancestors 'none'"})

    async def _action(self, request: web.Request) -> web.StreamResponse:
        from toolkit.runtime import actions  # a form's POST: loaded by the first one

        response: web.StreamResponse = await self.actions[request.path](actions, request)
        return response

    async def _readyz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        ready, detail = self._ready()
        return web.json_response({"ready": ready, "detail": detail},
                                 status=200 if ready else 503, dumps=_dumps)


def master_server(master: Master) -> HttpServer:
    def ready() -> tuple[bool, str]:
        return master.state == MasterState.ALIVE, f"master is {master.state.value}"
    return HttpServer("master", lambda: master_json(master), ready,
                      master.limits.http_connections, lambda: master.keys.web, {
                          "/metrics": lambda m: m.master_text(master),
                          "/metrics/master/prometheus": lambda m: m.master_text(master),
                          "/metrics/applications/prometheus":
                              lambda m: m.applications_text(master)}, {
                          "/": lambda p, q, r: p.master_page(master),
                          "/app/": lambda p, q, r: p.app_page(master, q.get("appId", ""), r),
                          "/driver/": lambda p, q, r: p.driver_page(master, q.get("id", ""), r),
                          "/login": lambda p, q, r: p.login_page(master, q.get("next", "/"), r)},
                      {"/driver/kill": lambda a, r: a.kill_driver(master, r),
                       "/app/kill": lambda a, r: a.kill_app(master, r),
                       "/login": lambda a, r: a.log_in(master, r),
                       "/logout": lambda a, r: a.log_out(master, r)}, master)


def worker_server(worker: Worker) -> HttpServer:
    def ready() -> tuple[bool, str]:
        if worker.registered:
            return True, f"registered with {worker.master_url}"
        return False, "not registered with a master"
    return HttpServer("worker", lambda: worker_state_json(worker), ready,
                      worker.limits.http_connections, lambda: worker.keys.web, {
                          "/metrics": lambda m: m.worker_text(worker),
                          "/metrics/prometheus": lambda m: m.worker_text(worker)}, {
                          "/": lambda p, q, r: p.worker_page(worker),
                          "/logPage/": lambda p, q, r: p.log_page(worker, q),
                          "/log": lambda p, q, r: p.log_download(worker, q),
                          "/login": lambda p, q, r: p.login_page(worker, q.get("next", "/"), r)},
                      {"/login": lambda a, r: a.log_in(worker, r),
                       "/logout": lambda a, r: a.log_out(worker, r)}, worker)
