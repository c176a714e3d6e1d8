"""What the web UI and REST port refuse or hide, on a real master: a login's `next` that leads
to another site, a form through a rebound name, arguments to a reader not logged in, tokens of
a retired secret, and crafted numbers."""

from __future__ import annotations

import http.client
import signal
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from tests.integration.runtime.test_drivers import wait_driver
from tests.integration.runtime.test_rest_api import call
from tests.integration.runtime.test_ui import Browser, field
from tests.procs import Cluster, ember, free_port, wait_for

SECRET = "correct-horse-battery-staple-0123456789"


def secret_file(directory: Path, *secrets: str) -> Path:
    path = directory / "secret"
    path.write_text("".join(s + "\n" for s in secrets))
    path.chmod(0o600)
    return path


def raw(base: str, method: str, path: str, form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """One request as sent, redirects not followed: status, Location, body."""
    where = urlsplit(base)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=5)
    body = urlencode(form).encode() if form is not None else None
    sent = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    connection.request(method, path, body=body, headers={**sent, **(headers or {})})
    response = connection.getresponse()
    answer = (response.status, response.getheader("Location") or "",
              response.read().decode(errors="replace"))
    connection.close()
    return answer


def test_a_login_never_leads_to_another_site_and_pages_hide_arguments_until_then(
        cluster: Cluster) -> None:
    key = secret_file(cluster.tmp, SECRET)
    master = cluster.master("--secret-file", str(key))
    worker = cluster.worker(master.url, "--secret-file", str(key), cores=1, memory="1g")
    master.wait_joined(worker)
    env = {"EMBER_MASTER_URL": master.url, "EMBER_SECRET_FILE": str(key)}
    driver = ember("submit", "--memory", "64m", "--", "sh", "-c", "exec sleep 60", "job",
                   "--token=TOKEN-12345", env=env).stdout.strip()
    wait_driver(master, driver, "RUNNING")

    page = Browser(master.ui).get(f"/driver/?id={driver}")
    title = page.split("<title>")[1].split("</title>")[0]
    assert "<form" not in title and driver in title
    assert "TOKEN-12345" not in page and "sh (arguments not shown" in page

    token = ember("ui-token", "--secret-file", str(key)).stdout.strip()
    login = Browser(master.ui).get("/login")
    origin = {"Origin": master.ui}
    for evil in ("/\t/evil.example", "//evil.example", "/\\evil.example", "https://evil.example",
                 "/\n/evil.example"):
        status, location, _ = raw(master.ui, "POST", "/login", {
            "csrf": field(login, "csrf"), "next": evil, "token": token}, origin)
        assert (status, location) == (303, "/"), evil
    status, location, _ = raw(master.ui, "POST", "/login", {
        "csrf": field(login, "csrf"), "next": f"/driver/?id={driver}", "token": token}, origin)
    assert (status, location) == (303, f"/driver/?id={driver}")

    browser = Browser(master.ui)
    browser.post("/login", {"csrf": field(login, "csrf"), "next": "/", "token": token})
    assert "sh -c exec sleep 60 job --token=TOKEN-12345" in browser.get(f"/driver/?id={driver}")

    # crafted numbers are refused as such, never a server error
    for cookie in ("v2.\u00b2.x", "v2." + "9" * 5000 + ".x"):
        status, _, _ = raw(master.ui, "GET", "/", headers={
            "Cookie": f"ember_session={quote(cookie)}"})
        assert status == 200
    status, _, body = raw(worker.ui, "GET", f"/logPage/?driverId={driver}&logType=stdout"
                                            f"&offset=%C2%B2&byteLength=1{'0' * 40}")
    assert status == 200, body


def test_with_ui_login_always_the_login_brings_the_reader_back_to_the_same_query(
        cluster: Cluster) -> None:
    key = secret_file(cluster.tmp, SECRET)
    master = cluster.master("--secret-file", str(key), "--ui-login", "always")
    status, location, _ = raw(master.ui, "GET", "/app/?appId=app-1&logType=stderr")
    assert status == 303 and location.startswith("/login?")
    assert parse_qs(urlsplit(location).query) == {"next": ["/app/?appId=app-1&logType=stderr"]}


def test_without_a_secret_a_form_through_another_name_is_refused(cluster: Cluster) -> None:
    master = cluster.master()  # --insecure: no login guards the forms
    login = Browser(master.ui).get("/login")
    port = urlsplit(master.ui).port
    rebound = f"evil.example:{port}"
    status, _, body = raw(master.ui, "POST", "/driver/kill", {
        "csrf": field(login, "csrf"), "id": "driver-20990101000000-0001"},
        {"Host": rebound, "Origin": f"http://{rebound}"})
    assert status == 403 and "is not this host&#39;s name" in body
    status, _, body = raw(master.ui, "POST", "/driver/kill", {
        "csrf": field(login, "csrf"), "id": "driver-20990101000000-0001"},
        {"Origin": master.ui})
    assert status == 409, body  # through its address: taken (no such driver to kill)


def test_rest_tokens_follow_a_rotation_of_the_secret(cluster: Cluster) -> None:
    old, new = SECRET, "a-brand-new-secret-of-the-cluster-42"
    key = secret_file(cluster.tmp, old)
    port = free_port()
    master = cluster.master("--secret-file", str(key), "--rest-port", str(port))
    tokens = {}
    for name, secret in (("old", old), ("new", new)):
        folder = cluster.tmp / name
        folder.mkdir()
        tokens[name] = ember("rest-token", "--secret-file",
                             str(secret_file(folder, secret))).stdout.strip()

    def readyz(token: str) -> int:
        return call(port, "GET", "/readyz", token=token)[0]
    assert readyz(tokens["old"]) == 200 and readyz(tokens["new"]) == 401
    assert call(port, "GET", "/readyz", token="v2.\u00b2.x")[0] == 401

    def reload(*secrets: str) -> None:
        secret_file(cluster.tmp, *secrets)
        logged = master.proc.log().count("reloaded the secrets")
        master.proc.signal(signal.SIGHUP)
        wait_for(lambda: master.proc.log().count("reloaded the secrets") > logged, 10,
                 "the reload")
    reload(new, old)  # a rotation: both accepted
    assert readyz(tokens["old"]) == 200 and readyz(tokens["new"]) == 200
    reload(new)  # the old one retired
    assert readyz(tokens["old"]) == 401 and readyz(tokens["new"]) == 200


def test_a_body_sent_a_byte_at_a_time_does_not_hold_its_connection(cluster: Cluster) -> None:
    import socket

    from toolkit.runtime.httpguard import BODY_TIMEOUT

    port = free_port()
    cluster.master("--rest-port", str(port))  # --insecure: no token needed to send a body
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(b"POST /v1/submissions/create HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):  # the master closes it after its answer
            answer += chunk
        assert time.monotonic() - started < BODY_TIMEOUT + 5
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
