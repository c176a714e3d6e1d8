"""Prometheus metrics of a real master and worker, read with prometheus-client's own parser and
checked against the cluster before and after a submit and a kill."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.runtime.test_applications import two_running_executors
from tests.integration.runtime.test_drivers import submit, wait_driver
from tests.procs import Cluster, ember, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, path: str = "/metrics") -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def one(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


def test_metrics_follow_the_cluster_through_a_submit_and_a_kill(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="1g")
    master.wait_joined(worker)

    before = scrape(master.webui)
    assert one(before, "ember_master_workers", state="ALIVE") == 1
    assert one(before, "ember_master_workers", state="DEAD") == 0
    assert one(before, "ember_master_cores") == 2
    assert one(before, "ember_master_cores_used") == 0
    assert one(before, "ember_master_memory_bytes") == 1024 * 1024 * 1024
    assert one(before, "ember_master_drivers", state="RUNNING") == 0
    assert one(before, "ember_master_registrations_total") == 1
    assert one(before, "ember_master_state", state="ALIVE") == 1
    assert one(before, "ember_master_open_connections") >= 1
    assert one(before, "ember_master_messages_handled_total", type="RegisterWorker") == 1
    assert one(before, "ember_master_message_handling_seconds_count",
               type="RegisterWorker") == 1
    assert scrape(master.webui, "/metrics/master/prometheus").keys() == before.keys()
    assert one(scrape(worker.webui), "ember_worker_registered") == 1

    driver = submit(master, "sh", "-c", "exec sleep 60", options=("--memory", "256m"))
    wait_driver(master, driver, "RUNNING")
    running = scrape(master.webui)
    assert one(running, "ember_master_drivers", state="RUNNING") == 1
    assert one(running, "ember_master_cores_used") == 1
    assert one(running, "ember_master_memory_used_bytes") == 256 * 1024 * 1024
    assert one(running, "ember_master_messages_handled_total", type="RequestSubmitDriver") == 1
    on_worker = wait_for(lambda: (lambda s: s if one(
        s, "ember_worker_launches_total", kind="driver") == 1 else None)(
        scrape(worker.webui, "/metrics/prometheus")), 10, "the launch counted")
    assert one(on_worker, "ember_worker_drivers") == 1
    assert one(on_worker, "ember_worker_cores_used") == 1
    assert one(on_worker, "ember_worker_launch_seconds_count", kind="driver") == 1
    assert one(on_worker, "ember_worker_launch_seconds_bucket", kind="driver", le="+Inf") == 1

    killed = ember("driver", "kill", driver, "--master", master.url)
    assert killed.returncode == 0, killed.stderr
    wait_driver(master, driver, "KILLED")
    after = scrape(master.webui)
    assert one(after, "ember_master_drivers", state="RUNNING") == 0
    assert one(after, "ember_master_drivers", state="KILLED") == 1
    assert one(after, "ember_master_cores_used") == 0
    assert one(scrape(worker.webui), "ember_worker_drivers") == 0
    assert one(after, "ember_master_heartbeats_total") >= 0
    assert scrape(master.webui, "/metrics/applications/prometheus") == {}


async def test_an_applications_executors_show_in_its_metrics(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="1g")
    master.wait_joined(worker)
    app, _ = await two_running_executors(master.url, worker.work_dir)
    try:
        apps = scrape(master.webui, "/metrics/applications/prometheus")
        labels = {"app_id": app.app_id, "name": "test-app"}
        assert one(apps, "ember_application_executors", **labels) == 2
        assert one(apps, "ember_application_cores", **labels) == 2
        assert one(apps, "ember_application_runtime_seconds", **labels) >= 0
        assert one(scrape(master.webui), "ember_master_executors", state="RUNNING") == 2
        assert one(scrape(master.webui), "ember_master_applications", state="RUNNING") == 1
        here = scrape(worker.webui)
        assert one(here, "ember_worker_executors", state="RUNNING") == 2
        assert one(here, "ember_worker_launches_total", kind="executor") == 2
    finally:
        await app.stop()
    wait_for(lambda: scrape(master.webui, "/metrics/applications/prometheus") == {}, 10,
             "the application gone from the metrics")


async def test_the_grafana_dashboard_reads_only_metrics_the_roles_serve(
        cluster: Cluster) -> None:
    """docs/grafana-dashboard.json: every metric its queries name is one a real master or
    worker serves, with an application running (a renamed metric would leave a panel
    empty)."""
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[3] / "docs" /
                            "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = {n for e in exprs for n in re.findall(r"\bember_[a-z_]+", e)}
    master = cluster.master()
    worker = cluster.worker(master.url, cores=2, memory="1g")
    master.wait_joined(worker)
    app, _ = await two_running_executors(master.url, worker.work_dir)
    try:
        served = {name for port, path in ((master.webui, "/metrics"),
                                          (worker.webui, "/metrics"),
                                          (master.webui, "/metrics/applications/prometheus"))
                  for name, _ in scrape(port, path)}
    finally:
        await app.stop()
    assert named and named <= served, named - served
    assert len(dashboard["panels"]) >= 10
