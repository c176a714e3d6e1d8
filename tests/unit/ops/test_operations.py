"""The playbook's operations on fake hosts: every host gets its result, whatever fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.ops.fake import HANG, FakeHost, Script, action_of, healthy
from toolkit import inventory as inventory_module
from toolkit.daemon.protocol import Report
from toolkit.ops.cluster import Cluster, Outcome, summary
from toolkit.ops.status import format_status, status
from toolkit.ops.transport import Result

WORKERS = ["w1", "w2", "w3"]
NO_ROUTE = "cannot connect to port 22: No route to host"


def worker_view(*alive: str) -> dict[str, Any]:
    return {"status": "ALIVE", "workers": [
        {"host": h, "webuiaddress": f"http://{h}:8081", "state": "ALIVE", "coresused": 0,
         "cores": 1, "memoryused": 0, "memory": 512} for h in alive]}


class Lab:
    """An inventory of one master and three workers, each on a FakeHost."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "fake.yml"
        path.write_text(f"cluster: {{secret_file: {tmp_path}/secret}}\n"
                        "defaults: {ember_home: /opt/ember, stop_timeout: 1}\n"
                        "masters: [m1]\nworkers: [w1, w2, w3]\n")
        self.inventory = inventory_module.load(path)
        self.hosts = {name: FakeHost(name, healthy) for name in ["m1", *WORKERS]}
        self.said: list[str] = []
        self.view: dict[str, Any] | None = worker_view(*WORKERS)

    def script(self, name: str, script: Script) -> None:
        self.hosts[name].script = script

    def cluster(self) -> Cluster:
        bound = Cluster(self.inventory, say=self.said.append,
                        transport=lambda entry: self.hosts[entry.address])
        bound.master_json = lambda entry: self.view  # type: ignore[method-assign]
        return bound


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    yield Lab(tmp_path)


def by_host(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.host: o for o in outcomes}


def test_status_gives_every_host_a_row_whatever_fails(lab: Lab) -> None:
    lab.hosts["w1"].down = NO_ROUTE
    lab.script("w2", lambda argv, stdin: HANG)
    lab.script("w3", lambda argv, stdin: Result("w3", "", 1, "Traceback (most recent...", ""))
    lab.view = worker_view("w2", "w3")
    rows = {r["host"]: r for r in status(lab.cluster())}
    assert sorted(rows) == ["m1", *WORKERS]
    assert (rows["m1"]["daemon"], rows["m1"]["ok"]) == ("running", True)
    assert (rows["w1"]["daemon"], rows["w1"]["error"]) == ("unreachable", NO_ROUTE)
    assert rows["w2"]["daemon"] == "unknown" and "exit 124" in rows["w2"]["error"]
    assert rows["w3"]["daemon"] == "unknown" and "Traceback" in rows["w3"]["error"]
    assert [rows[w]["master_view"] for w in WORKERS] == ["missing", "ALIVE", "ALIVE"]
    table = format_status(list(rows.values()))
    assert f"w1: {NO_ROUTE}" in table and table.startswith("HOST")
    assert lab.said == []  # status prints nothing itself: the table does


def test_start_all_ships_files_orders_go_and_reports_a_partial_failure(lab: Lab) -> None:
    def w2_fails(argv: list[str], stdin: bytes) -> Result:
        if action_of(argv)[0] == "start":
            out = Report("worker", 1, 1, ["failed to launch worker 1: port in use"]).line()
            return Result("w2", "", 1, out + "\n", "")
        return healthy(argv, stdin)

    lab.script("w2", w2_fails)
    lab.view = worker_view("w1", "w3")
    outcomes = lab.cluster().start_all(wait=5)
    results = by_host(outcomes)
    assert results["w2"].ok is False
    assert results["w2"].message == ("failed to start (exit 1)\n"
                                     "failed to launch worker 1: port in use")
    assert all(results[h].ok for h in ("m1", "w1", "w3"))
    assert summary("start-all", outcomes) == (
        1, "start-all: 3 of 4 succeeded; failed on w2")
    master_call = lab.hosts["m1"].calls[0]
    assert "--timeout" in master_call.argv and "--files-from-stdin" in master_call.argv
    for name in WORKERS:
        (call,) = [c for c in lab.hosts[name].calls if "--when-told" in c.argv]
        bundle, order = call.stdin.decode().splitlines()
        assert "/opt/ember/conf/ember-env.sh" in bundle and "/opt/ember/conf/secret" in bundle
        word, seconds = order.split()
        assert word == "go" and 0 < float(seconds) <= 5


def test_start_all_tells_workers_to_skip_when_no_master_is_up(lab: Lab) -> None:
    lab.script("m1", lambda argv, stdin: Result("m1", "", 1, Report(
        "master", 1, 1, ["failed to launch master 1: cannot listen"]).line() + "\n", ""))
    outcomes = lab.cluster().start_all(wait=5)
    results = by_host(outcomes)
    assert not results["m1"].ok
    assert [results[w].message for w in WORKERS] == ["not started: no master is up"] * 3


def test_a_host_that_is_down_is_reported_and_the_others_start(lab: Lab) -> None:
    lab.hosts["w1"].down = NO_ROUTE
    lab.view = worker_view("w2", "w3")
    outcomes = lab.cluster().start_all(wait=5)
    results = by_host(outcomes)
    assert (results["w1"].ok, results["w1"].role, results["w1"].message) == (
        False, "worker", NO_ROUTE)
    assert all(results[h].ok for h in ("m1", "w2", "w3"))
    assert f"w1: worker 1: {NO_ROUTE}" in lab.said


def test_workers_not_alive_by_the_deadline_are_stopped(lab: Lab) -> None:
    lab.view = worker_view("w1")
    outcomes = lab.cluster().start_all(wait=0.5)
    results = by_host(outcomes)
    assert results["w1"].ok
    for name in ("w2", "w3"):
        assert results[name].message == "not ALIVE in the master's view within --wait: stopped"
        assert action_of(lab.hosts[name].calls[-1].argv) == ("stop", "worker", [1])


def test_stop_all_reports_a_hung_host_and_still_stops_the_masters(lab: Lab) -> None:
    lab.script("w3", lambda argv, stdin: HANG)
    outcomes = lab.cluster().stop_all()
    results = by_host(outcomes)
    assert results["w3"].ok is False and "failed to stop (exit 124)" in results["w3"].message
    assert all(results[h].ok for h in ("m1", "w1", "w2"))
    (master_stop,) = lab.hosts["m1"].calls
    assert master_stop.stdin.decode().endswith("go\n")  # told once the workers were done
