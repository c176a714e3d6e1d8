"""The REST submission API: HTTP mapping onto a fake DriverService, JSON shaped like Spark 4.3's."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import toolkit
from toolkit.runtime import messages as m
from toolkit.runtime.rest import BadRequest, build_app, driver_description
from toolkit.runtime.wire import rest_token, rest_token_error

V = toolkit.__version__
SECRET = b"cluster-secret"


class FakeService:
    """Keeps drivers in a dict; answers like the master would."""

    def __init__(self) -> None:
        self.submitted: list[m.DriverDescription] = []
        self.running: dict[str, m.DriverStatusResponse] = {}
        self.ready: tuple[bool, str] = (True, "")
        self.accept = True
        self.fail = False
        self.asked: list[str] = []

    def submit_driver(self, desc: m.DriverDescription) -> m.SubmitDriverResponse:
        if self.fail:
            raise RuntimeError("secret internals /etc/ember")
        if not self.accept:
            return m.SubmitDriverResponse(False, None, "Current state is not alive: STANDBY")
        self.submitted.append(desc)
        driver_id = f"driver-20260101000000-{len(self.submitted) - 1:04d}"
        self.running[driver_id] = m.DriverStatusResponse(driver_id, True, "SUBMITTED")
        message = f"Driver successfully submitted as {driver_id}"
        return m.SubmitDriverResponse(True, driver_id, message)

    def kill_driver(self, driver_id: str) -> m.KillDriverResponse:
        if self.running.pop(driver_id, None) is None:
            message = f"Driver {driver_id} has already finished or does not exist"
            return m.KillDriverResponse(driver_id, False, message)
        return m.KillDriverResponse(driver_id, True, f"Kill request for {driver_id} submitted")

    def driver_status(self, driver_id: str) -> m.DriverStatusResponse:
        return self.running.get(driver_id) or m.DriverStatusResponse(driver_id, False)

    def kill_all_drivers(self) -> m.KillAllDriversResponse:
        self.running.clear()
        return m.KillAllDriversResponse(True, "Kill request for all drivers submitted")

    def clear_completed(self) -> m.ClearCompletedDriversAndAppsResponse:
        return m.ClearCompletedDriversAndAppsResponse(True, "")

    def readiness(self) -> tuple[bool, str]:
        return self.ready

    async def ask(self, request: m.Message, kind: type[Any]) -> Any:
        """As the master's one door: each request to the answer its handler would give."""
        self.asked.append(type(request).__name__)
        if isinstance(request, m.RequestSubmitDriver):
            answer: m.Message = self.submit_driver(request.desc)
        elif isinstance(request, m.RequestKillDriver):
            answer = self.kill_driver(request.driver_id)
        elif isinstance(request, m.RequestDriverStatus):
            answer = self.driver_status(request.driver_id)
        elif isinstance(request, m.RequestKillAllDrivers):
            answer = self.kill_all_drivers()
        elif isinstance(request, m.RequestClearCompletedDriversAndApps):
            answer = self.clear_completed()
        else:
            raise AssertionError(f"unexpected {request}")
        assert isinstance(answer, kind)
        return answer


Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[Client] = []

    async def make(service: FakeService, secret: bytes | None = None) -> Client:
        client: Client = TestClient(TestServer(build_app(service, secret)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
async def client(make_client: MakeClient, service: FakeService) -> Client:
    return await make_client(service)


def create_request(**overrides: Any) -> dict[str, Any]:
    """What spark-submit 4.3.0 sent (captured), trimmed; ``None`` drops a field."""
    body: dict[str, Any] = {
        "action": "CreateSubmissionRequest",
        "appArgs": ["a", "b c"],
        "appResource": "file:/tmp/x.jar",
        "clientSparkVersion": "4.3.0",
        "environmentVariables": {"SPARK_SCALA_VERSION": "2.13", "SPARK_FOO": "bar"},
        "mainClass": "Hello",
        "sparkProperties": {
            "spark.jars": "file:/tmp/x.jar",
            "spark.driver.supervise": "true",
            "spark.app.name": "myapp",
            "spark.driver.memory": "2g",
            "spark.driver.cores": "2",
            "spark.submit.deployMode": "cluster",
            "spark.master": "spark://127.0.0.1:6066",
        },
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def props(**extra: Any) -> dict[str, Any]:
    return create_request(sparkProperties=extra)


# Happy paths ---------------------------------------------------------------------------------


async def test_create_answers_like_spark_and_submits_the_driver(
    client: Client, service: FakeService
) -> None:
    response = await client.post("/v1/submissions/create", json=create_request())
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        "action": "CreateSubmissionResponse",
        "serverSparkVersion": V,
        "success": True,
        "submissionId": "driver-20260101000000-0000",
        "message": "Driver successfully submitted as driver-20260101000000-0000",
    }
    assert service.submitted == [
        m.DriverDescription(
            command=["java", "-Xmx2048m", "-cp", "/tmp/x.jar", "Hello", "a", "b c"],
            cores=2, memory=2048, supervise=True, name="myapp",
            env={"SPARK_SCALA_VERSION": "2.13", "SPARK_FOO": "bar"}, main_class="Hello")
    ]


async def test_create_lists_unknown_fields_as_spark_does(client: Client) -> None:
    response = await client.post("/v1/submissions/create", json=create_request(bogus=1))
    assert (await response.json())["unknownFields"] == ["bogus"]


async def test_create_refused_by_the_master_is_200_with_success_false(
    client: Client, service: FakeService
) -> None:
    service.accept = False
    response = await client.post("/v1/submissions/create", json=create_request())
    assert response.status == 200
    assert await response.json() == {
        "action": "CreateSubmissionResponse", "serverSparkVersion": V, "success": False,
        "message": "Current state is not alive: STANDBY",
    }


async def test_status_of_a_driver_on_a_worker(client: Client, service: FakeService) -> None:
    service.running["driver-1"] = m.DriverStatusResponse(
        "driver-1", True, "RUNNING", "worker-1", "127.0.0.1:40795")
    response = await client.get("/v1/submissions/status/driver-1")
    assert response.status == 200
    assert await response.json() == {
        "action": "SubmissionStatusResponse", "serverSparkVersion": V, "success": True,
        "submissionId": "driver-1", "driverState": "RUNNING", "workerId": "worker-1",
        "workerHostPort": "127.0.0.1:40795",
    }


async def test_status_of_an_unknown_driver_is_200_with_success_false(client: Client) -> None:
    response = await client.get("/v1/submissions/status/driver-x")
    assert response.status == 200
    assert await response.json() == {
        "action": "SubmissionStatusResponse", "serverSparkVersion": V, "success": False,
        "submissionId": "driver-x",
    }


async def test_kill_known_and_unknown(client: Client, service: FakeService) -> None:
    service.running["driver-1"] = m.DriverStatusResponse("driver-1", True, "RUNNING")
    response = await client.post("/v1/submissions/kill/driver-1")
    assert response.status == 200
    assert await response.json() == {
        "action": "KillSubmissionResponse", "serverSparkVersion": V, "success": True,
        "submissionId": "driver-1", "message": "Kill request for driver-1 submitted",
    }
    response = await client.post("/v1/submissions/kill/driver-1")
    assert response.status == 200
    assert await response.json() == {
        "action": "KillSubmissionResponse", "serverSparkVersion": V, "success": False,
        "submissionId": "driver-1",
        "message": "Driver driver-1 has already finished or does not exist",
    }


async def test_every_action_asks_the_master_through_its_one_door(
        client: Client, service: FakeService) -> None:
    await client.post("/v1/submissions/create", json=create_request())
    await client.get("/v1/submissions/status/driver-20260101000000-0000")
    await client.post("/v1/submissions/kill/driver-20260101000000-0000")
    await client.post("/v1/submissions/killall")
    await client.post("/v1/submissions/clear")
    assert service.asked == ["RequestSubmitDriver", "RequestDriverStatus", "RequestKillDriver",
                             "RequestKillAllDrivers", "RequestClearCompletedDriversAndApps"]


async def test_killall_clear_and_readyz(client: Client) -> None:
    response = await client.post("/v1/submissions/killall")
    assert await response.json() == {
        "action": "KillAllSubmissionResponse", "serverSparkVersion": V, "success": True,
        "message": "Kill request for all drivers submitted",
    }
    response = await client.post("/v1/submissions/clear")
    assert await response.json() == {
        "action": "ClearResponse", "serverSparkVersion": V, "success": True, "message": "",
    }
    response = await client.get("/v1/submissions/readyz")
    assert response.status == 200
    assert await response.json() == {
        "action": "ReadyzResponse", "serverSparkVersion": V, "success": True, "message": "",
    }


async def test_readyz_not_ready_is_503(client: Client, service: FakeService) -> None:
    service.ready = (False, "master is in STANDBY")
    response = await client.get("/v1/submissions/readyz")
    assert response.status == 503
    assert await response.json() == {
        "action": "ErrorResponse", "serverSparkVersion": V, "message": "master is in STANDBY",
    }


# Mapping CreateSubmissionRequest -> DriverDescription ---------------------------------------


@pytest.mark.parametrize("resource", ["file:/opt/app.jar", "file:///opt/app.jar",
                                      "file://localhost/opt/app.jar", "/opt/app.jar"])
def test_local_resource_forms_give_the_same_path(resource: str) -> None:
    desc = driver_description(create_request(appResource=resource, appArgs=None))
    assert desc.command == ["java", "-Xmx2048m", "-cp", "/opt/app.jar", "Hello"]


def test_percent_escapes_of_a_file_uri_are_decoded() -> None:
    desc = driver_description(create_request(appResource="file:/opt/my%20app.py", appArgs=[]))
    assert desc.command == ["python3", "/opt/my app.py"]


def test_jar_with_java_options_and_extra_classpath() -> None:
    desc = driver_description(props(**{
        "spark.driver.defaultJavaOptions": "-Da=1",
        "spark.driver.extraJavaOptions": "-Dx=1 '-Dy=two words'",
        "spark.driver.extraClassPath": "/opt/lib/a.jar:/opt/lib/b.jar",
    }))
    assert desc.command == [
        "java", "-Xmx1024m", "-Da=1", "-Dx=1", "-Dy=two words",
        "-cp", "/opt/lib/a.jar:/opt/lib/b.jar:/tmp/x.jar", "Hello", "a", "b c",
    ]


def test_defaults_when_spark_properties_are_empty() -> None:
    desc = driver_description(props())
    assert (desc.cores, desc.memory, desc.supervise, desc.name) == (1, 1024, False, "Hello")


def test_python_file_runs_with_python3() -> None:
    desc = driver_description(create_request(appResource="/opt/job.py", mainClass=None))
    assert desc.command == ["python3", "/opt/job.py", "a", "b c"]
    assert desc.main_class == ""


def test_other_files_run_as_executables_named_after_the_file() -> None:
    body = props()
    del body["mainClass"]
    body["appResource"] = "file:///opt/bin/job"
    desc = driver_description(body)
    assert desc.command == ["/opt/bin/job", "a", "b c"]
    assert desc.name == "job"


def test_supervise_is_case_insensitive_and_memory_units_work() -> None:
    desc = driver_description(props(**{"spark.driver.supervise": "TRUE",
                                       "spark.driver.memory": "512m"}))
    assert desc.supervise is True
    assert desc.memory == 512
    assert desc.command[1] == "-Xmx512m"


def test_host_specific_spark_variables_are_dropped() -> None:
    desc = driver_description(create_request(environmentVariables={
        "SPARK_LOCAL_IP": "10.0.0.9", "SPARK_LOCAL_HOSTNAME": "laptop", "SPARK_FOO": "bar"}))
    assert desc.env == {"SPARK_FOO": "bar"}


# Refused requests ----------------------------------------------------------------------------


BAD_REQUESTS: list[tuple[Any, str]] = [
    ([1], "must be a JSON object, not an array"),
    ({}, "missing field 'action'"),
    (create_request(action="Foo"), 'action "Foo" does not belong on /create'),
    (create_request(action="KillSubmissionRequest"), "expected \"CreateSubmissionRequest\""),
    (create_request(appResource=None), "missing field 'appResource'"),
    (create_request(appResource=" "), "'appResource' is empty"),
    (create_request(appResource=5), "'appResource' must be a string, not a number"),
    (create_request(sparkProperties=None), "missing field 'sparkProperties'"),
    (create_request(sparkProperties=[]), "'sparkProperties' must be an object"),
    (props(**{"spark.driver.cores": 2}), "sparkProperties['spark.driver.cores'] must be a string"),
    (create_request(clientSparkVersion=None), "missing field 'clientSparkVersion'"),
    (create_request(appArgs="a b"), "'appArgs' must be an array of strings"),
    (create_request(appArgs=["a", 1]), "'appArgs' must be an array of strings"),
    (create_request(environmentVariables={"X": 1}), "environmentVariables['X'] must be a string"),
    (create_request(environmentVariables="X=1"), "'environmentVariables' must be an object"),
    (create_request(mainClass=None), "'mainClass' is required to run the jar /tmp/x.jar"),
    (props(**{"spark.driver.cores": "0"}), "spark.driver.cores '0' is not a positive whole number"),
    (props(**{"spark.driver.cores": "1.5"}), "spark.driver.cores '1.5' is not a positive"),
    (props(**{"spark.driver.memory": "512"}), "spark.driver.memory '512' has no unit"),
    (props(**{"spark.driver.memory": "lots"}), "'lots' is not a memory size like 512m"),
    (props(**{"spark.driver.supervise": "yes"}), "spark.driver.supervise 'yes' must be true or"),
    (props(**{"spark.driver.extraJavaOptions": "-Xmx4g"}), "must not set -Xmx"),
    (props(**{"spark.driver.extraJavaOptions": "-D'x"}), "cannot be split into words"),
    (create_request(appResource="hdfs://nn/app.jar"), "scheme hdfs: only local paths"),
    (create_request(appResource="http://h/app.jar"), "scheme http: only local paths"),
    (create_request(appResource="file://other/app.jar"), "names host 'other'"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_REQUESTS)
async def test_bad_create_requests_are_400_naming_the_problem(
    client: Client, service: FakeService, body: Any, problem: str
) -> None:
    response = await client.post("/v1/submissions/create", json=body)
    assert response.status == 400
    answer = await response.json()
    assert answer["action"] == "ErrorResponse"
    assert answer["serverSparkVersion"] == V
    assert problem in answer["message"]
    assert service.submitted == []
    with pytest.raises(BadRequest) as refused:
        driver_description(body)
    assert problem in str(refused.value)


@pytest.mark.parametrize(("raw", "problem"), [
    (b"not json", "malformed JSON: Expecting value"),
    (b"", "the request body is empty"),
    (b"\xff\xfe{", "malformed JSON"),
])
async def test_unparsable_bodies_are_400(client: Client, raw: bytes, problem: str) -> None:
    response = await client.post("/v1/submissions/create", data=raw,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert problem in (await response.json())["message"]


@pytest.mark.parametrize("path", ["/v2/submissions/create", "/v2/submissions/status/driver-1"])
async def test_other_protocol_versions_are_468(client: Client, path: str) -> None:
    response = await client.post(path, json=create_request())
    assert response.status == 468
    answer = await response.json()
    assert answer["highestProtocolVersion"] == "v1"
    assert "Unknown protocol version 'v2'" in answer["message"]
    assert "v1" in answer["message"].split("'v2'")[1]


@pytest.mark.parametrize(("method", "path", "status", "problem"), [
    ("GET", "/", 400, "Missing protocol version."),
    ("GET", "/v1/other", 400, "Missing the /submissions prefix."),
    ("POST", "/v1/submissions/foo", 400, "Missing an action: please specify one of /create"),
    ("GET", "/v1/submissions/", 400, "Missing an action"),
    ("POST", "/v1/submissions/kill/", 400, "Submission ID is missing in kill request."),
    ("GET", "/v1/submissions/status/", 400, "Submission ID is missing in status request."),
    ("GET", "/v1/submissions/status/a/b", 400, "Malformed path"),
    ("POST", "/v1/submissions/killall/x", 400, "Malformed path"),
    ("GET", "/v1/submissions/create", 405, "HTTP method GET is not supported"),
    ("POST", "/v1/submissions/status/driver-1", 405, "use GET"),
])
async def test_unknown_routes(
    client: Client, method: str, path: str, status: int, problem: str
) -> None:
    response = await client.request(method, path)
    assert response.status == status
    answer = await response.json()
    assert answer["action"] == "ErrorResponse"
    assert problem in answer["message"]


async def test_server_faults_are_500_without_details(
    client: Client, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    service.fail = True
    response = await client.post("/v1/submissions/create", json=create_request())
    assert response.status == 500
    text = await response.text()
    assert (await response.json())["action"] == "ErrorResponse"
    assert "Traceback" not in text
    assert "/etc/ember" not in text
    assert "secret internals" in caplog.text


# Authentication ------------------------------------------------------------------------------


def test_a_rest_token_is_an_expiry_signed_with_the_secret() -> None:
    token = rest_token(SECRET, ttl=60, now=1_000_000)
    version, expiry, mac = token.split(".")
    assert (version, expiry) == ("v2", "1000060") and len(mac) == 64 and int(mac, 16) >= 0
    assert SECRET.decode() not in token
    assert rest_token_error(SECRET, token, now=1_000_059) is None
    assert rest_token_error(SECRET, token, now=1_000_060) == (
        "expired token (mint another with `ember rest-token`)")
    assert rest_token_error(b"another secret-of-16", token, now=1_000_000) == "wrong token"
    forged = f"v2.9999999999.{mac}"  # a later expiry under the same signature
    assert rest_token_error(SECRET, forged, now=1_000_000) == "wrong token"
    old_fixed = "a" * 64  # the v1 token, valid until the secret changed: no more
    assert "not a token of this cluster" in str(rest_token_error(SECRET, old_fixed))


@pytest.mark.parametrize("path", ["/v1/submissions/readyz", "/v1/submissions/status/driver-1",
                                  "/v2/submissions/readyz"])
async def test_missing_token_is_401_with_a_challenge(
    make_client: MakeClient, service: FakeService, path: str
) -> None:
    client = await make_client(service, SECRET)
    response = await client.get(path)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    answer = await response.json()
    assert answer["action"] == "ErrorResponse"
    assert "Authorization: Bearer" in answer["message"]


@pytest.mark.parametrize(("header", "problem"), [
    ("Bearer not-the-token", "not a token of this cluster"),
    ("Bearer ", "not a token of this cluster"),
    (f"Bearer v2.9999999999.{'0' * 64}", "wrong token"),
    ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
])
async def test_wrong_token_is_401_and_never_echoed(
    make_client: MakeClient, service: FakeService, header: str, problem: str
) -> None:
    client = await make_client(service, SECRET)
    response = await client.post("/v1/submissions/create", json=create_request(),
                                 headers={"Authorization": header})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    text = await response.text()
    assert problem in text
    assert "not-the-token" not in text
    assert rest_token(SECRET) not in text
    assert service.submitted == []


async def test_right_token_is_accepted_and_never_logged(
    make_client: MakeClient, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="toolkit.runtime.rest")
    client = await make_client(service, SECRET)
    headers = {"Authorization": f"bearer {rest_token(SECRET)}"}
    response = await client.post("/v1/submissions/create", json=create_request(), headers=headers)
    assert response.status == 200
    assert (await response.json())["success"] is True
    response = await client.get("/v1/submissions/readyz", headers=headers)
    assert response.status == 200
    assert "driver-20260101000000-0000" in caplog.text
    assert rest_token(SECRET) not in caplog.text


async def test_no_secret_means_no_authentication(client: Client) -> None:
    response = await client.get("/v1/submissions/readyz",
                                headers={"Authorization": "Bearer anything"})
    assert response.status == 200


async def test_without_a_secret_a_web_page_cannot_submit_or_kill(
        client: Client, service: FakeService) -> None:
    """The cross-site POST of a browser (text/plain, an Origin elsewhere), and a request by a
    name the master does not answer to (DNS rebinding): refused, and nothing done."""
    body = json.dumps(create_request())
    plain = await client.post("/v1/submissions/create", data=body,
                              headers={"Content-Type": "text/plain"})
    assert plain.status == 415
    elsewhere = await client.post("/v1/submissions/kill/driver-1",
                                  headers={"Origin": "http://evil.example"})
    assert elsewhere.status == 403 and "cross-site" in (await elsewhere.json())["message"]
    rebound = await client.get("/v1/submissions/status/driver-1",
                               headers={"Host": "evil.example:6066"})
    assert rebound.status == 421
    assert service.asked == []  # nothing reached the master
    fine = await client.post("/v1/submissions/create", data=body,
                             headers={"Content-Type": "application/json;charset=UTF-8",
                                      "Origin": f"http://{client.host}:{client.port}"})
    assert fine.status == 200


async def test_an_expired_token_is_refused(make_client: MakeClient,
                                           service: FakeService) -> None:
    client = await make_client(service, SECRET)
    stale = rest_token(SECRET, ttl=60, now=0)
    response = await client.get("/v1/submissions/readyz",
                                headers={"Authorization": f"Bearer {stale}"})
    assert response.status == 401 and "expired token" in await response.text()
