"""The web UI of a real master and worker, over HTTP: what the pages show of the real cluster,
log pages paging back through a 10 MB log, and names that cannot reach outside the work
directory or into the page's markup."""

from __future__ import annotations

import html
import re
import sys
import urllib.error
import urllib.request

from tests.integration.runtime.test_applications import two_running_executors
from tests.integration.runtime.test_drivers import alive, submit, wait_driver
from tests.procs import Cluster, WorkerProc, wait_for

BIG = ("import sys\n"
       "for i in range(200_000): sys.stdout.write(f'line {i:07d} ' + 'x' * 38 + '\\n')\n"
       "sys.stdout.flush()\n"
       "import time; time.sleep(60)\n")  # 200,000 lines of 52 bytes: 10.4 MB


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def links(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]+)"', page)]


def test_the_pages_show_the_real_cluster_and_link_its_parts(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="1g")
    worker_id = master.wait_joined(worker)
    driver = submit(master, "sh", "-c", "echo hello from the driver; exec sleep 60",
                    options=("--memory", "128m", "--name", "<b>named</b>"))
    wait_driver(master, driver, "RUNNING")

    status, page, headers = get(master.ui + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert f"Ember master at {master.url}" in page
    assert '<span id="alive-workers">1</span>' in page and '<span id="cores">1 / 2</span>' in page
    assert f'<a href="http://127.0.0.1:{worker.webui}">{worker_id}</a>' in page
    assert f"driver/?id={driver}" in links(page)
    assert "<b>named</b>" not in page  # names are text, never markup
    assert 'http-equiv="refresh"' in page
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+\.(?:css|js))"', page))

    status, page, _ = get(f"{master.ui}/driver/?id={driver}")
    assert status == 200 and 'id="state">RUNNING<' in page
    stdout = next(u for u in links(page) if u.endswith("logType=stdout"))
    status, log, _ = get(stdout)
    assert status == 200 and "hello from the driver" in log
    assert get(f"{master.ui}/driver/?id=driver-20990101000000-0001")[0] == 404

    status, page, _ = get(worker.ui + "/")
    assert status == 200 and driver in page
    assert f"logPage/?driverId={driver}&logType=stderr" in links(page)


async def test_an_application_page_lists_its_executors_and_their_workers(
        cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="1g")
    worker_id = master.wait_joined(worker)
    app, _ = await two_running_executors(master.url, worker.work_dir)
    try:
        status, page, _ = get(master.ui + "/")
        assert f"app/?appId={app.app_id}" in links(page)
        status, page, _ = get(f"{master.ui}/app/?appId={app.app_id}")
        assert status == 200 and 'id="state">RUNNING<' in page
        assert page.count(f">{worker_id}</a>") == 2
        assert page.count(">RUNNING</td>") == 2
        log = next(u for u in links(page) if "executorId=" in u and "stderr" in u)
        assert get(log)[0] == 200
    finally:
        await app.stop()


def _page(worker: WorkerProc, query: str) -> str:
    status, page, _ = get(f"{worker.ui}/logPage/?{query}")
    assert status == 200, page
    return page


def test_a_log_page_shows_the_tail_and_pages_back_through_a_10_mb_log(
        cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=1, memory="1g")
    master.wait_joined(worker)
    driver = submit(master, sys.executable, "-c", BIG, options=("--memory", "128m"))
    wait_driver(master, driver, "RUNNING")
    query = f"driverId={driver}&logType=stdout"
    size = 200_000 * 52
    wait_for(lambda: f"of {size} " in _page(worker, query), 30, "the whole log written")

    tail = _page(worker, query)
    assert "line 0199999" in tail and "line 0000000" not in tail
    assert f"Bytes {size - 102400}-{size} of {size}" in tail
    assert 'http-equiv="refresh"' in tail  # at the tail of a running driver: following
    previous = next(u for u in links(tail) if "offset=" in u)
    back = _page(worker, previous.split("?", 1)[1])
    assert f"Bytes {size - 2 * 102400}-{size - 102400} of {size}" in back
    assert 'http-equiv="refresh"' not in back  # an older page stays put
    first = _page(worker, f"{query}&offset=0&byteLength=104")
    assert "line 0000000" in first and "line 0000001" in first and "line 0000002" not in first

    with urllib.request.urlopen(f"{worker.ui}/log?{query}", timeout=10) as response:
        assert "attachment" in response.headers["Content-Disposition"]
        assert len(response.read()) == size


def test_log_pages_name_only_embers_own_files(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=1, memory="1g")
    master.wait_joined(worker)
    for query in ("driverId=../../../etc&logType=passwd",
                  "driverId=driver-20990101000000-0001&logType=../../../../etc/passwd",
                  "appId=..&executorId=..&logType=stdout",
                  "driverId=driver-20990101000000-0001/../../x&logType=stdout", "logType=stdout"):
        status, page, _ = get(f"{worker.ui}/logPage/?{query}")
        assert status == 404, query
        assert "root:" not in page
        assert get(f"{worker.ui}/log?{query}")[0] == 404


class Browser:
    """urllib with cookies, as a browser keeps them; forms posted as a browser posts them."""

    def __init__(self, origin: str) -> None:
        import http.cookiejar

        self.origin = origin
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        with self.opener.open(self.origin + path, timeout=5) as response:
            return str(response.read().decode())

    def post(self, path: str, form: dict[str, str], origin: str | None = None
             ) -> tuple[int, str]:
        from urllib.parse import urlencode

        request = urllib.request.Request(self.origin + path, data=urlencode(form).encode(),
                                         headers={"Origin": origin or self.origin})
        try:
            with self.opener.open(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} in the page"
    return html.unescape(found.group(1))


def test_killing_a_driver_from_its_page_needs_a_login_and_the_forms_token(
        cluster: Cluster) -> None:
    from tests.procs import ember

    key = cluster.tmp / "secret"
    key.write_text("correct-horse-battery-staple-0123456789\n")
    key.chmod(0o600)
    master = cluster.master("--secret-file", str(key))
    worker = cluster.worker(master.url, "--secret-file", str(key), cores=1, memory="1g")
    master.wait_joined(worker)
    env = {"EMBER_MASTER_URL": master.url, "EMBER_SECRET_FILE": str(key)}
    driver = ember("submit", "--memory", "64m", "--", "sh", "-c", "echo $$ > pid; exec sleep 60",
                   env=env).stdout.strip()
    wait_driver(master, driver, "RUNNING")
    pid = int(wait_for(lambda: (worker.work_dir / driver / "pid").read_text().strip(), 10,
                       "the driver's pid"))
    browser = Browser(master.ui)

    page = browser.get(f"/driver/?id={driver}")
    assert 'id="kill"' not in page and 'id="login"' in page  # reading needs no login
    login = browser.get(f"/login?next=/driver/?id={driver}")
    status, said = browser.post("/driver/kill", {"id": driver, "csrf": field(login, "csrf")})
    assert status == 401 and "Log in first" in said
    assert browser.post("/login", {"csrf": field(login, "csrf"), "next": "/",
                                   "token": "v2.1.nope"})[0] == 401
    token = ember("ui-token", "--secret-file", str(key)).stdout.strip()
    status, _ = browser.post("/login", {"csrf": field(login, "csrf"),
                                        "next": f"/driver/?id={driver}", "token": token})
    assert status == 200  # redirected back to the driver's page
    cookie = next(c for c in browser.jar if c.name == "ember_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.value == token
    assert cookie.get_nonstandard_attr("SameSite") == "Strict"

    page = browser.get(f"/driver/?id={driver}")
    assert 'id="kill"' in page
    token_of_form = field(page, "csrf")
    assert browser.post("/driver/kill", {"id": driver})[0] == 403  # no CSRF token
    assert browser.post("/driver/kill", {"id": driver, "csrf": token_of_form},
                        origin="http://evil.example")[0] == 403
    assert wait_driver(master, driver, "RUNNING")
    status, page = browser.post("/driver/kill", {"id": driver, "csrf": token_of_form})
    assert status == 200 and 'id="state">' in page
    wait_driver(master, driver, "KILLED")
    wait_for(lambda: not alive(pid), 10, "the driver's process gone")



async def test_killing_an_application_from_its_page_stops_its_executors(
        cluster: Cluster) -> None:
    master = cluster.master()  # no secret: no login, the form's token still needed
    worker = cluster.worker(master.url, cores=2, memory="1g")
    master.wait_joined(worker)
    app, pids = await two_running_executors(master.url, worker.work_dir)
    try:
        browser = Browser(master.ui)
        page = browser.get(f"/app/?appId={app.app_id}")
        assert 'id="kill"' in page
        assert browser.post("/app/kill", {"id": app.app_id})[0] == 403  # no CSRF token
        status, page = browser.post("/app/kill", {"id": app.app_id,
                                                  "csrf": field(page, "csrf")})
        assert status == 200 and 'id="state">KILLED<' in page
        wait_for(lambda: not any(alive(p) for p in pids.values()), 15, "the executors gone")
        removed = await app.event()
        assert "killed from the web UI" in str(removed)
    finally:
        await app.stop()


async def test_an_applications_page_lists_its_ended_executors_with_their_exit_codes(
        cluster: Cluster) -> None:
    from tests.integration.runtime.test_applications import app_desc, registered

    master = cluster.master()
    worker = cluster.worker(master.url, cores=1, memory="1g")
    master.wait_joined(worker)
    async with registered(master, app_desc(["sh", "-c", "exit 3"], cores_per_executor=1,
                                           max_cores=1)) as app:
        def ended() -> str | None:
            page = get(f"{master.ui}/app/?appId={app.app_id}")[1]
            table = page.split('id="removed-executors"')[1]
            return table if ">EXITED</td><td>3</td>" in table else None
        table = wait_for(ended, 15, "an ended executor with its exit code")
        assert "logType=stderr" in table


def test_with_ui_login_always_reading_needs_a_login_too(cluster: Cluster) -> None:
    import json

    from tests.procs import ember

    key = cluster.tmp / "secret"
    key.write_text("correct-horse-battery-staple-0123456789\n")
    key.chmod(0o600)
    master = cluster.master("--secret-file", str(key), "--ui-login", "always")
    worker = cluster.worker(master.url, "--secret-file", str(key), "--ui-login", "always",
                            cores=1, memory="1g")
    browser = Browser(master.ui)
    for where in ("/", "/json", "/driver/?id=driver-20990101000000-0001"):
        page = browser.get(where)
        assert 'id="token"' in page and "Log in" in page, where  # sent to the login page
    token = ember("ui-token", "--secret-file", str(key)).stdout.strip()
    with urllib.request.urlopen(urllib.request.Request(
            master.ui + "/json", headers={"Authorization": f"Bearer {token}"}), timeout=5) as r:
        assert json.load(r)["status"] == "ALIVE"  # a program's token (fab status sends one)
    login = browser.get("/login")
    status, page = browser.post("/login", {"csrf": field(login, "csrf"), "next": "/",
                                           "token": token})
    assert status == 200 and 'id="status">ALIVE<' in page
    wait_for(lambda: 'id="alive-workers">1<' in browser.get("/"), 15, "the worker listed")
    on_worker = Browser(worker.ui)

    def worker_login_page() -> str | None:  # its UI starts once it has registered
        try:
            return on_worker.get("/")
        except urllib.error.URLError:
            return None
    assert 'id="token"' in wait_for(worker_login_page, 15, "the worker's UI")  # its own login
    worker_login = on_worker.get("/login")
    status, page = on_worker.post("/login", {"csrf": field(worker_login, "csrf"), "next": "/",
                                             "token": token})
    assert status == 200 and "Ember worker" in page
