"""Spark's REST submission API, served by the master on its own port (``--rest-port``).

Spark's client uses it for ``spark-submit --deploy-mode cluster --conf
spark.master.rest.enabled=true``; ``curl`` works too. Base path ``/v1/submissions``::

    POST /create       CreateSubmissionRequest -> CreateSubmissionResponse
    GET  /status/<id>  SubmissionStatusResponse  (200 with success false for an unknown id)
    POST /kill/<id>    KillSubmissionResponse    (200 with success false for an unknown id)
    POST /killall      KillAllSubmissionResponse
    POST /clear        ClearResponse
    GET  /readyz       ReadyzResponse, or 503 ErrorResponse while the master is not ready

Answers are JSON as Spark 4.3 writes them: ``action`` (the message name), ``serverSparkVersion``
(Ember's version: Spark's client requires the field, not a value), ``success`` and the other
fields, null ones left out. Errors are ``ErrorResponse``: 400 for a bad request (the message
names what is wrong), 401 without the right token, 405 for a wrong method, 468 for a protocol
version other than v1 (with ``highestProtocolVersion``), 500 for a fault of the server (never a
traceback).

Authentication: when the cluster has a secret, every request, readyz included, needs
``Authorization: Bearer <token>`` with a token that ``ember rest-token [--ttl SECONDS]`` mints
(``wire.rest_token``: an expiry signed with the secret, one hour by default). Spark's client
has no setting to send a header, so it can only use a master without a secret.

How a CreateSubmissionRequest becomes a driver. Required, as in Spark: ``action``,
``clientSparkVersion``, ``appResource``, ``sparkProperties`` (an object of strings).

- appResource: ``file:/x``, ``file:///x`` or a plain path ``/x`` -> ``/x``, a path on the worker
  that runs the driver; other schemes (http:, hdfs:, ...) are refused.
- command for a ``.jar``: ``java -Xmx<memory>m [spark.driver.defaultJavaOptions]
  [spark.driver.extraJavaOptions] -cp [spark.driver.extraClassPath:]<jar> <mainClass>
  <appArgs...>``; mainClass is required.
- command for a ``.py``: ``python3 <file> <appArgs...>``; anything else: ``<file> <appArgs...>``
  (an executable on the worker).
- name: spark.app.name, else mainClass, else the file name.
- cores: spark.driver.cores, a positive integer (default 1).
- memory: spark.driver.memory such as ``512m`` or ``2g`` (default 1g). A bare number is refused:
  Spark's REST server reads it as bytes and gives the driver 0 MiB.
- supervise: spark.driver.supervise, ``true`` or ``false`` (default false).
- env: environmentVariables, minus SPARK_LOCAL_IP and SPARK_LOCAL_HOSTNAME (they describe the
  submitting host; Spark drops them too). main_class: mainClass, or "".

Other spark properties are ignored; unknown top-level fields are listed in the answer's
``unknownFields``, as Spark does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from aiohttp import web

import toolkit
from toolkit.errors import ConfigError, EmberError, NotLeaderError
from toolkit.runtime import messages as m
from toolkit.runtime.httpguard import within_body_timeout
from toolkit.runtime.keys import Keys, as_keys
from toolkit.runtime.session import own_host
from toolkit.runtime.wire import rest_token_error

if TYPE_CHECKING:
    from toolkit.runtime.httpguard import TlsSource
from toolkit.settings import parse_memory_mb, positive_int

Secrets = Callable[[], tuple[bytes, ...]]
"""The secrets a REST token may be of now: a rotation (a reload) changes them while the port
runs; none turns authentication off."""

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "v1"
SERVER_VERSION = toolkit.__version__
_HINT = "Please submit requests through http://[host]:[port]/v1/submissions/..."
_ACTIONS = "/create, /kill, /killall, /clear, /status, or /readyz"
_METHODS = {"create": "POST", "kill": "POST", "killall": "POST", "clear": "POST",
            "status": "GET", "readyz": "GET"}
_WITH_ID = {"kill", "status"}
_KNOWN_FIELDS = {"action", "clientSparkVersion", "appResource", "mainClass", "appArgs",
                 "sparkProperties", "environmentVariables", "message"}
_HOST_ENV = {"SPARK_LOCAL_IP", "SPARK_LOCAL_HOSTNAME"}


T = TypeVar("T", bound=m.Message)


class DriverService(Protocol):
    """What the REST API needs from the master: its one door (``ask``: the request goes
    through the inbox to the same handler as over RPC), and whether it is ready."""

    async def ask(self, request: m.Message, kind: type[T]) -> T: ...
    def readiness(self) -> tuple[bool, str]: ...


class BadRequest(EmberError, ValueError):
    """A request the API refuses with 400; the message says what is wrong."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _string(body: dict[str, Any], field: str, required: bool) -> str:
    value = body.get(field)
    if value is None:
        if required:
            raise BadRequest(f"missing field {field!r} in CreateSubmissionRequest")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{field!r} must be a string, not {_kind(value)}")
    return value


def _string_map(body: dict[str, Any], field: str, required: bool) -> dict[str, str]:
    value = body.get(field)
    if value is None:
        if required:
            raise BadRequest(f"missing field {field!r} in CreateSubmissionRequest")
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{field!r} must be an object of strings, not {_kind(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise BadRequest(f"{field}[{key!r}] must be a string, not {_kind(item)}")
    return value


def _local_path(resource: str) -> str:
    if not resource.strip():
        raise BadRequest("'appResource' is empty: give the path of a jar, .py or executable")
    parts = urlsplit(resource)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise BadRequest(f"appResource {resource!r} names host {parts.netloc!r}: "
                             "only local paths (file:/path or /path) are supported")
        path = unquote(parts.path)
        if not path:
            raise BadRequest(f"appResource {resource!r} has no path")
        return path
    if len(parts.scheme) > 1:  # a one-letter "scheme" is a Windows drive, kept as a path
        raise BadRequest(f"appResource {resource!r} uses scheme {parts.scheme}: only local "
                         "paths (file:/path or /path on the workers) are supported")
    return resource


def _positive_int(props: dict[str, str], key: str, default: int) -> int:
    text = props.get(key)
    if text is None:
        return default
    try:
        return positive_int(text)
    except ValueError as exc:
        raise BadRequest(f"{key} {exc}") from None


def _boolean(props: dict[str, str], key: str) -> bool:
    text = props.get(key, "false").strip().lower()
    if text not in ("true", "false"):
        raise BadRequest(f"{key} {props[key]!r} must be true or false")
    return text == "true"


def _java_options(props: dict[str, str]) -> list[str]:
    options: list[str] = []
    for key in ("spark.driver.defaultJavaOptions", "spark.driver.extraJavaOptions"):
        try:
            words = shlex.split(props.get(key, ""))
        except ValueError as exc:
            raise BadRequest(f"{key} cannot be split into words: {exc}") from None
        if any(word.startswith("-Xmx") for word in words):
            raise BadRequest(f"{key} must not set -Xmx: use spark.driver.memory")
        options += words
    return options


def driver_description(body: Any) -> m.DriverDescription:
    """A decoded CreateSubmissionRequest -> what the master runs (see the module docstring)."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request must be a JSON object, not {_kind(body)}")
    if "action" not in body:
        raise BadRequest("missing field 'action': expected \"CreateSubmissionRequest\"")
    if body["action"] != "CreateSubmissionRequest":
        raise BadRequest(f"action {json.dumps(body['action'])} does not belong on /create: "
                         "expected \"CreateSubmissionRequest\"")
    _string(body, "clientSparkVersion", required=True)
    resource = _local_path(_string(body, "appResource", required=True))
    props = _string_map(body, "sparkProperties", required=True)
    env = _string_map(body, "environmentVariables", required=False)
    main_class = _string(body, "mainClass", required=False)
    args = body.get("appArgs")
    args = [] if args is None else args
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise BadRequest(f"'appArgs' must be an array of strings, not {json.dumps(args)[:80]}")
    cores = _positive_int(props, "spark.driver.cores", 1)
    try:
        memory = parse_memory_mb(props.get("spark.driver.memory", "1g"), "spark.driver.memory")
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    supervise = _boolean(props, "spark.driver.supervise")
    if resource.lower().endswith(".jar"):
        if not main_class:
            raise BadRequest(f"'mainClass' is required to run the jar {resource}")
        classpath = props.get("spark.driver.extraClassPath", "")
        classpath = f"{classpath}:{resource}" if classpath else resource
        command = ["java", f"-Xmx{memory}m", *_java_options(props), "-cp", classpath, main_class]
    elif resource.lower().endswith(".py"):
        command = ["python3", resource]
    else:
        command = [resource]
    name = props.get("spark.app.name") or main_class or posixpath.basename(resource)
    return m.DriverDescription(
        command=[*command, *args], cores=cores, memory=memory, supervise=supervise, name=name,
        env={k: v for k, v in env.items() if k not in _HOST_ENV}, main_class=main_class)


def _answer(action: str, status: int = 200, **fields: Any) -> web.Response:
    body = {"action": action, "serverSparkVersion": SERVER_VERSION}
    body.update({k: v for k, v in fields.items() if v is not None})
    text = json.dumps(body, indent=2, sort_keys=True)
    return web.Response(text=text, status=status, content_type="application/json")


def _error(status: int, message: str, **fields: Any) -> web.Response:
    return _answer("ErrorResponse", status, message=message, **fields)


class _RestApi:
    def __init__(self, service: DriverService, secrets: Secrets,
                 host: str | None = None) -> None:
        self.service = service
        self.secrets = secrets
        self.host = host

    def _cross_site(self, request: web.Request) -> web.Response | None:
        """Without a secret, nothing but the network guards the port, and a web page in a
        browser on it can reach it: a cross-site POST (Origin elsewhere) is refused, and so
        is a name this master does not answer to (DNS rebinding). With a secret, the bearer
        token, which no browser adds by itself, is the guard."""
        if self.secrets():
            return None
        if not own_host(request.host, self.host):
            log.warning("REST request %s %s refused: Host %r is not this master's",
                        request.method, request.path, request.host)
            return _error(421, f"Host {request.host!r} is not this master: use its address")
        origin = request.headers.get("Origin")
        if origin is not None and origin.partition("://")[2].rstrip("/") != request.host:
            log.warning("REST request %s %s refused: cross-site, from %r", request.method,
                        request.path, origin)
            return _error(403, f"cross-site request from {origin!r} refused")
        return None

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        secrets = self.secrets()
        if not secrets:
            return None
        header = request.headers.get("Authorization")
        if header is None:
            message = "this master needs Authorization: Bearer <token>, the token of its secret"
            answer = _error(401, message)
            answer.headers["WWW-Authenticate"] = "Bearer"
        else:
            scheme, _, given = header.strip().partition(" ")
            problem = (rest_token_error(secrets, given.strip())
                       if scheme.lower() == "bearer" else
                       "the Authorization header must be 'Bearer <token>'")
            if problem is None:
                return None
            answer = _error(401, problem)
            answer.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        log.warning("REST request %s %s refused: not authenticated", request.method, request.path)
        return answer

    async def handle(self, request: web.Request) -> web.Response:
        refused = self._cross_site(request) or self._unauthorized(request)
        if refused is not None:
            return refused
        try:
            return await self._route(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        except NotLeaderError as exc:  # a standby, or still recovering: ask the leader
            return _error(503, str(exc))
        except web.HTTPException as exc:  # 413 from aiohttp for a body over its limit
            return _error(exc.status, exc.reason)
        except Exception:
            log.exception("REST request %s %s failed", request.method, request.path)
            return _error(500, "internal error of the master; its log has the details")

    async def _route(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        if parts == [""]:
            return _error(400, f"Missing protocol version. {_HINT}")
        if parts[0] != PROTOCOL_VERSION:
            message = (f"Unknown protocol version {parts[0]!r}: this server speaks "
                       f"{PROTOCOL_VERSION} only. {_HINT}")
            return _error(468, message, highestProtocolVersion=PROTOCOL_VERSION)
        if len(parts) < 2 or parts[1] != "submissions":
            return _error(400, f"Missing the /submissions prefix. {_HINT}")
        action, args = (parts[2], parts[3:]) if len(parts) > 2 else ("", [])
        if action not in _METHODS:
            return _error(400, f"Missing an action: please specify one of {_ACTIONS}. {_HINT}")
        if request.method != _METHODS[action]:
            return _error(405, f"HTTP method {request.method} is not supported by "
                          f"/{PROTOCOL_VERSION}/submissions/{action}: use {_METHODS[action]}")
        if action in _WITH_ID:
            if not args or not args[0]:
                return _error(400, f"Submission ID is missing in {action} request.")
            if len(args) > 1:
                return _error(400, f"Malformed path: one submission ID after /{action}/")
            return await (self._status(args[0]) if action == "status" else self._kill(args[0]))
        if args:
            return _error(400, f"Malformed path: /{action} takes nothing after it")
        if action == "create":
            return await self._create(request)
        if action == "killall":
            done = await self.service.ask(m.RequestKillAllDrivers(), m.KillAllDriversResponse)
            return _answer("KillAllSubmissionResponse", success=done.success, message=done.message)
        if action == "clear":
            cleared = await self.service.ask(m.RequestClearCompletedDriversAndApps(),
                                             m.ClearCompletedDriversAndAppsResponse)
            return _answer("ClearResponse", success=cleared.success, message=cleared.message)
        ready, reason = self.service.readiness()
        if not ready:
            return _error(503, reason or "Master is not ready.")
        return _answer("ReadyzResponse", success=True, message=reason)

    async def _create(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, f"a submission is JSON: Content-Type: application/json, not "
                          f"{request.content_type!r}")
        raw = await within_body_timeout(request.read())
        if not raw.strip():
            raise BadRequest("the request body is empty: expected a CreateSubmissionRequest")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        desc = driver_description(body)
        result = await self.service.ask(m.RequestSubmitDriver(desc), m.SubmitDriverResponse)
        if result.success:
            log.info("REST submission %s: %s", result.driver_id, desc.name)
        else:
            log.info("REST submission of %s refused: %s", desc.name, result.message)
        unknown = sorted(k for k in body if k not in _KNOWN_FIELDS) or None
        return _answer("CreateSubmissionResponse", success=result.success,
                       submissionId=result.driver_id, message=result.message,
                       unknownFields=unknown)

    async def _status(self, driver_id: str) -> web.Response:
        status = await self.service.ask(m.RequestDriverStatus(driver_id), m.DriverStatusResponse)
        return _answer("SubmissionStatusResponse", submissionId=driver_id, success=status.found,
                       driverState=status.state, workerId=status.worker_id,
                       workerHostPort=status.worker_host_port, message=status.message)

    async def _kill(self, driver_id: str) -> web.Response:
        killed = await self.service.ask(m.RequestKillDriver(driver_id), m.KillDriverResponse)
        log.info("REST kill of %s: %s", driver_id, killed.message)
        return _answer("KillSubmissionResponse", submissionId=driver_id,
                       success=killed.success, message=killed.message)


def build_app(service: DriverService, secret: bytes | Secrets | None,
              host: str | None = None) -> web.Application:
    """The aiohttp application of the REST port. ``secret``: the one a token must be of, or
    what gives the current ones; none turns authentication off (and the cross-site checks
    on). ``host``: the name it answers to beside addresses."""
    secrets: Secrets = secret if callable(secret) else lambda: (secret,) if secret else ()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", _RestApi(service, secrets, host).handle)
    return app


class RestServer:
    """The REST port's listener and its aiohttp runner, stopped together."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self.runner, self.server = runner, server

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def start_server(service: DriverService, host: str, port: int,
                       keys: Keys | bytes | None, connections: int = 256,
                       tls: TlsSource = None,
                       current: Callable[[], Keys] | None = None) -> RestServer:
    """Serve the REST API on ``host:port``; ConfigError names the port when it is taken.
    ``current``: the keys now, after any reload (default: ``keys``, for good)."""
    from toolkit.runtime import httpguard

    keys = as_keys(keys)
    secret = keys.secret
    now = current or (lambda: keys)
    runner = web.AppRunner(build_app(service, lambda: now().secrets, host), access_log=None,
                           handle_signals=False,
                           **httpguard.RUNNER_LIMITS)
    await runner.setup()
    try:
        server = await httpguard.serve(runner, host, port, "master REST API", connections,
                                       tls or keys.web)
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"master REST API cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc} (choose another with --rest-port)") from None
    log.info("REST submission API at %s://%s:%d/v1/submissions (%s)", keys.scheme, host, port,
             "bearer token required" if secret is not None else "no authentication")
    return RestServer(runner, server)
