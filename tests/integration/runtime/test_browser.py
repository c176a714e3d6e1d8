"""The web UI in a real browser: headless Chromium (Debian's chromium package) driven by
Playwright, against a real master and worker with a cluster secret."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.runtime.test_drivers import alive, wait_driver
from tests.integration.runtime.test_ui import BIG
from tests.procs import Cluster, ember, wait_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
"""As root, no sandbox; this machine's network is closed: no background connections."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium: scripts/test installs it as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def test_an_operator_reads_the_cluster_follows_a_log_and_kills_a_driver(
        cluster: Cluster, browser: Any) -> None:
    key = cluster.tmp / "secret"
    key.write_text("correct-horse-battery-staple-0123456789\n")
    key.chmod(0o600)
    master = cluster.master("--secret-file", str(key))
    worker = cluster.worker(master.url, "--secret-file", str(key), cores=2, memory="1g")
    worker_id = master.wait_joined(worker)
    env = {"EMBER_MASTER_URL": master.url, "EMBER_SECRET_FILE": str(key)}
    chatty = ember("submit", "--memory", "64m", "--name", "chatty", "--", sys.executable, "-c",
                   BIG, env=env).stdout.strip()
    victim = ember("submit", "--memory", "64m", "--name", "victim", "--", "sh", "-c",
                   "echo $$ > pid; exec sleep 60", env=env).stdout.strip()
    for driver in (chatty, victim):
        wait_driver(master, driver, "RUNNING")
    pid = int(wait_for(lambda: (worker.work_dir / victim / "pid").read_text().strip(), 10,
                       "the victim's pid"))
    size = 200_000 * 52
    wait_for(lambda: (worker.work_dir / chatty / "stdout").stat().st_size == size, 30,
             "the 10 MB log written")

    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(master.ui + "/")
    assert page.locator("#status").inner_text() == "ALIVE"
    assert page.locator("#alive-workers").inner_text() == "1"
    assert page.locator("#workers tr").count() == 2  # the header and the one worker
    assert worker_id in page.locator("#workers").inner_text()
    drivers = page.locator("#active-drivers").inner_text()
    assert chatty in drivers and victim in drivers and "RUNNING" in drivers

    # the worker's page, then the chatty driver's log: its tail, then a page back
    page.click(f"#workers a:text('{worker_id}')")
    assert chatty in page.locator("#drivers").inner_text()
    page.click(f"#drivers tr:has-text('{chatty}') a:text('stdout')")
    assert "line 0199999" in page.locator("#log").inner_text()
    assert page.locator("#range").inner_text().startswith(f"Bytes {size - 102400}-{size}")
    page.click("#previous")
    assert page.locator("#range").inner_text().startswith(
        f"Bytes {size - 2 * 102400}-{size - 102400}")
    assert "line 0199999" not in page.locator("#log").inner_text()

    # the victim's page: log in with a UI token, then kill it
    page.goto(f"{master.ui}/driver/?id={victim}")
    assert page.locator("#kill").count() == 0
    page.click("#login")
    token = ember("ui-token", "--secret-file", str(key)).stdout.strip()
    page.fill("#token", token)
    page.click("#submit")
    assert page.url.endswith(f"/driver/?id={victim}")
    page.click("#kill")
    wait_driver(master, victim, "KILLED")
    wait_for(lambda: not alive(pid), 10, "the victim's process gone")
    page.goto(f"{master.ui}/driver/?id={victim}")
    assert page.locator("#state").inner_text() == "KILLED"

    # a form posted without its CSRF token is refused, even with the session cookie
    refused = page.request.post(f"{master.ui}/driver/kill", form={"id": chatty})
    assert refused.status == 403
    assert wait_driver(master, chatty, "RUNNING")
    assert errors == []
    page.close()
