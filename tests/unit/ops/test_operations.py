"""The playbook's operations on fake hosts: every host gets its result, whatever fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.ops.fake import HANG, FakeHost, Script, action_of, healthy
from toolkit import inventory as inventory_module
from toolkit.daemon.protocol import Report
from toolkit.errors import ConfigError
from toolkit.ops import lifecycle, units
from toolkit.ops.cluster import Cluster
from toolkit.ops.group import Outcome
from toolkit.ops.logs import logs
from toolkit.ops.show import Printer, format_status, summary
from toolkit.ops.status import status
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
        bound = Cluster(self.inventory, events=Printer(self.said.append),
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
    outcomes = lifecycle.start_all(lab.cluster(), wait=5)
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
    outcomes = lifecycle.start_all(lab.cluster(), wait=5)
    results = by_host(outcomes)
    assert not results["m1"].ok
    assert [results[w].message for w in WORKERS] == ["not started: no master is up"] * 3


def test_a_host_that_is_down_is_reported_and_the_others_start(lab: Lab) -> None:
    lab.hosts["w1"].down = NO_ROUTE
    lab.view = worker_view("w2", "w3")
    outcomes = lifecycle.start_all(lab.cluster(), wait=5)
    results = by_host(outcomes)
    assert (results["w1"].ok, results["w1"].role, results["w1"].message) == (
        False, "worker", NO_ROUTE)
    assert all(results[h].ok for h in ("m1", "w2", "w3"))
    assert f"w1: worker 1: {NO_ROUTE}" in lab.said


def test_workers_not_alive_by_the_deadline_are_stopped(lab: Lab) -> None:
    lab.view = worker_view("w1")
    outcomes = lifecycle.start_all(lab.cluster(), wait=0.5)
    results = by_host(outcomes)
    assert results["w1"].ok
    for name in ("w2", "w3"):
        assert results[name].message == "not ALIVE in the master's view within --wait: stopped"
        assert action_of(lab.hosts[name].calls[-1].argv) == ("stop", "worker", [1])


def test_stop_all_reports_a_hung_host_and_still_stops_the_masters(lab: Lab) -> None:
    lab.script("w3", lambda argv, stdin: HANG)
    outcomes = lifecycle.stop_all(lab.cluster())
    results = by_host(outcomes)
    assert results["w3"].ok is False and "failed to stop (exit 124)" in results["w3"].message
    assert all(results[h].ok for h in ("m1", "w1", "w2"))
    (master_stop,) = lab.hosts["m1"].calls
    assert master_stop.stdin.decode().endswith("go\n")  # told once the workers were done


def test_status_shows_a_role_that_nothing_supervises(lab: Lab) -> None:
    def unsupervised(argv: list[str], stdin: bytes) -> Result:
        info = {"role": "worker", "instance": 1, "code": 0, "state": "unsupervised",
                "pid": 77, "uptime": 9.0, "detail": "supervisord is not running"}
        return Result("w1", "", 0, json.dumps(info) + "\n", "")

    lab.script("w1", unsupervised)
    rows = {r["host"]: r for r in status(lab.cluster())}
    assert (rows["w1"]["daemon"], rows["w1"]["ok"]) == ("unsupervised", False)
    assert "w1: worker 1: supervisord is not running" in format_status(list(rows.values()))


def test_install_systemd_writes_nothing_itself_and_reports_a_host_without_systemd(
        lab: Lab) -> None:
    def no_systemd(argv: list[str], stdin: bytes) -> Result:
        return Result("w2", "", 1, "", "install-systemd: systemd is not running on this host "
                                       "(no /run/systemd/system); nothing was written\n")

    lab.script("w2", no_systemd)
    outcomes = units.install_systemd(lab.cluster(), scope="user")
    results = by_host(outcomes)
    assert not results["w2"].ok and "systemd is not running" in results["w2"].message
    assert all(results[h].ok for h in ("m1", "w1", "w3"))
    for host in lab.hosts.values():
        assert host.files == {}  # no file was put ahead of the host's own check
        (call,) = host.calls
        # the files go with the command that checks first; the scope travels as a flag
        assert "--files-from-stdin" in call.argv and call.argv[call.argv.index("--scope") + 1] \
            == "user"
        assert b"/opt/ember/conf/secret" in call.stdin


def test_a_bad_grep_pattern_is_refused_before_any_host_is_asked(lab: Lab) -> None:
    with pytest.raises(ConfigError, match=r"--grep '\(' is not a regular expression"):
        logs(lab.cluster(), lines=5, follow=False, grep="(")
    assert all(host.calls == [] for host in lab.hosts.values())


def test_logs_prefix_every_line_with_host_and_role_and_name_a_host_that_is_down(
        lab: Lab) -> None:
    lab.hosts["w3"].down = NO_ROUTE
    for name in ("m1", "w1", "w2"):
        lab.script(name, lambda argv, stdin: Result("", "", 0, "line one\nline two\n", ""))
    failed = logs(lab.cluster(), lines=5, follow=False, grep="ERROR|WARN")
    assert failed
    assert "w1: worker 1: line two" in lab.said and "m1: master 1: line one" in lab.said
    assert f"w3: logs: {NO_ROUTE}" in lab.said
    (call,) = lab.hosts["w1"].calls
    assert call.argv[-3:] == ["-n", "5", "--grep=ERROR|WARN"]


def test_stop_all_says_when_a_role_had_to_be_killed(lab: Lab) -> None:
    def killed(argv: list[str], stdin: bytes) -> Result:
        line = Report("worker", 1, 0, ["worker 1 did not stop within 10 s of SIGTERM: killed "
                                       "with SIGKILL"]).line()
        return Result("w1", "", 0, line + "\n", "")

    lab.script("w1", killed)
    results = by_host(lifecycle.stop_all(lab.cluster()))
    assert results["w1"].ok
    assert "w1: worker 1: did not stop within 10 s of SIGTERM: killed with SIGKILL" in lab.said


def test_a_late_worker_that_cannot_be_stopped_is_listed_with_the_command_that_stops_it(
        lab: Lab) -> None:
    def stop_fails(argv: list[str], stdin: bytes) -> Result:
        if action_of(argv)[0] == "stop":
            return Result("w2", "", 1, "", "supervisor is not answering")
        return healthy(argv, stdin)

    lab.script("w2", stop_fails)
    lab.view = worker_view("w1", "w3")
    results = by_host(lifecycle.start_all(lab.cluster(), wait=0.5))
    assert results["w2"].message.startswith(
        "not ALIVE in the master's view within --wait: could not be stopped (exit 1): run "
        "`ember daemon stop worker 1` on w2")


def test_restart_all_counts_every_outcome_of_the_stop_and_the_start(lab: Lab) -> None:
    def stop_fails(argv: list[str], stdin: bytes) -> Result:
        if action_of(argv)[0] == "stop":
            return Result("w1", "", 1, "", "boom")
        return healthy(argv, stdin)

    lab.script("w1", stop_fails)
    outcomes = lifecycle.restart_all(lab.cluster(), wait=5)
    assert len(outcomes) == 8  # 4 stops and 4 starts
    assert [o.host for o in outcomes if not o.ok] == ["w1"]
    assert summary("restart-all", outcomes) == (1, "restart-all: 7 of 8 succeeded; failed on w1")
    starts = [c for c in lab.hosts["w2"].calls if action_of(c.argv)[0] == "start"]
    assert float(starts[0].stdin.decode().splitlines()[-1].split()[1]) <= 5  # --wait bounds it


def test_doctor_and_deploy_failures_are_labelled_by_task_and_name_the_host_once(
        lab: Lab) -> None:
    from toolkit.ops import provision

    lab.hosts["w2"].down = NO_ROUTE
    outcomes = provision.doctor(lab.cluster())
    failed = [o for o in outcomes if o.host == "w2"]
    assert [(o.role, o.message) for o in failed] == [("doctor", NO_ROUTE)]
    assert f"w2: doctor: {NO_ROUTE}" in lab.said


def test_deploy_never_turns_a_systems_python_into_its_venv(tmp_path: Path) -> None:
    from toolkit.ops import provision

    path = tmp_path / "py.yml"
    path.write_text(f"cluster: {{secret_file: {tmp_path}/secret}}\n"
                    "defaults: {ember_home: /opt/ember, python: /usr/bin/python3}\n"
                    "masters: [m1]\nworkers: [w1]\n")
    hosts = {name: FakeHost(name, healthy) for name in ("m1", "w1")}
    cluster = Cluster(inventory_module.load(path), events=Printer([].append),
                      transport=lambda entry: hosts[entry.address])
    outcomes = provision.deploy(cluster)
    assert outcomes and not any(o.ok for o in outcomes)
    assert all("deploy makes and fills only /opt/ember/venv" in o.message for o in outcomes)
    assert all(not host.calls for host in hosts.values())  # nothing was run there


def two_masters(tmp_path: Path, views: dict[str, Any]
                ) -> tuple[Cluster, dict[str, FakeHost], list[str]]:
    """Masters m1 and m2 that recover from one directory, worker w1; each master's /json is
    what ``views`` holds for it at the time."""
    path = tmp_path / "ha.yml"
    path.write_text(f"cluster: {{secret_file: {tmp_path}/secret}}\n"
                    "defaults: {ember_home: /opt/ember}\n"
                    "recovery: {mode: filesystem, dir: /shared/ember}\n"
                    "masters: [m1, m2]\nworkers: [w1]\n")
    hosts = {name: FakeHost(name, healthy) for name in ("m1", "m2", "w1")}
    said: list[str] = []
    bound = Cluster(inventory_module.load(path), events=Printer(said.append),
                    transport=lambda entry: hosts[entry.address])
    bound.master_json = lambda entry: views[entry.address]  # type: ignore[method-assign]
    return bound, hosts, said


def test_two_masters_that_recover_a_leader_and_a_standby_are_both_healthy(
        tmp_path: Path) -> None:
    views: dict[str, Any] = {"m1": worker_view("w1"),
                             "m2": {"status": "STANDBY", "workers": []}}
    bound, _, _ = two_masters(tmp_path, views)
    env = bound.host_env(bound.targets["m2"])
    assert (env["EMBER_RECOVERY_MODE"], env["EMBER_RECOVERY_DIR"]) == (
        "filesystem", "/shared/ember")
    assert "EMBER_RECOVERY_MODE" not in bound.host_env(bound.targets["w1"])
    assert bound.host_env(bound.targets["w1"])["EMBER_MASTER_URL"] == (
        "ember://m1:7077,m2:7077")
    rows = status(bound)
    assert [(r["host"], r["master_view"], r["ok"]) for r in rows] == [
        ("m1", "ALIVE", True), ("m2", "STANDBY", True), ("w1", "ALIVE", True)]
    assert "leader: m1" in format_status(rows)
    views["m1"] = {"status": "STANDBY", "workers": []}  # nobody leads: that is not healthy
    rows = status(bound)
    assert not all(r["ok"] for r in rows)
    assert "leader: none (no master is ALIVE)" in format_status(rows)


def test_the_failover_drill_stops_the_leader_times_the_takeover_and_restarts_it(
        tmp_path: Path) -> None:
    from toolkit.ops.failover import failover

    app = {"id": "app-1", "state": "RUNNING"}
    views: dict[str, Any] = {
        "m1": {"status": "ALIVE", "aliveworkers": 1, "activeapps": [app]},
        "m2": {"status": "STANDBY", "aliveworkers": 0, "activeapps": []}}

    def m1_script(argv: list[str], stdin: bytes) -> Result:
        if action_of(argv)[0] == "stop":  # the standby takes over once the leader is gone
            views["m1"] = None
            views["m2"] = {"status": "ALIVE", "aliveworkers": 1, "activeapps": [app]}
        return healthy(argv, stdin)

    bound, hosts, said = two_masters(tmp_path, views)
    hosts["m1"].script = m1_script
    outcomes = failover(bound, wait=5)
    assert [(o.host, o.role, o.ok) for o in outcomes] == [
        ("m1", "master", True), ("m2", "failover", True), ("m1", "master", True)]
    assert outcomes[1].message.startswith("leads after ")
    assert outcomes[1].message.endswith("s, with 1 workers and 1 applications back")
    assert [action_of(c.argv)[0] for c in hosts["m1"].calls] == ["stop", "start"]
    assert hosts["m2"].calls == [] and hosts["w1"].calls == []
    assert "failover: stopping the leader m1 (1 workers, 1 applications)" in said


def test_the_failover_drill_takes_masters_written_with_their_ssh_user(tmp_path: Path) -> None:
    from toolkit.ops.failover import failover

    path = tmp_path / "ha.yml"
    path.write_text(f"cluster: {{secret_file: {tmp_path}/secret}}\n"
                    "defaults: {ember_home: /opt/ember}\n"
                    "recovery: {mode: filesystem, dir: /shared/ember}\n"
                    "masters: [op@m1, op@m2]\nworkers: [w1]\n")
    views: dict[str, Any] = {"op@m1": {"status": "ALIVE", "aliveworkers": 0},
                             "op@m2": {"status": "STANDBY", "aliveworkers": 0}}

    def m1_script(argv: list[str], stdin: bytes) -> Result:
        if action_of(argv)[0] == "stop":
            views["op@m1"], views["op@m2"] = None, {"status": "ALIVE", "aliveworkers": 0}
        return healthy(argv, stdin)
    hosts = {"op@m1": FakeHost("m1", m1_script), "op@m2": FakeHost("m2", healthy),
             "w1": FakeHost("w1", healthy)}
    bound = Cluster(inventory_module.load(path), events=Printer([].append),
                    transport=lambda entry: hosts[entry.address])
    bound.master_json = lambda entry: views[entry.address]  # type: ignore[method-assign]
    outcomes = failover(bound, wait=5)
    assert [(o.role, o.ok) for o in outcomes] == [("master", True), ("failover", True),
                                                 ("master", True)]


def test_a_failover_needs_a_leader_and_a_standby(lab: Lab) -> None:
    from toolkit.errors import EmberError
    from toolkit.ops.failover import failover

    with pytest.raises(EmberError, match="needs two masters or more and a recovery section"):
        failover(lab.cluster())


def ensemble_cluster(tmp_path: Path) -> tuple[Cluster, dict[str, FakeHost]]:
    """Masters m1, m2 in zookeeper mode on the ensemble the playbook runs on m1, m2, w1."""
    path = tmp_path / "zk.yml"
    path.write_text(f"cluster: {{secret_file: {tmp_path}/secret}}\n"
                    "defaults: {ember_home: /opt/ember}\n"
                    "recovery: {mode: zookeeper, ensemble: [m1, m2, w1]}\n"
                    "masters: [m1, m2]\nworkers: [w1, w2]\n")
    hosts = {name: FakeHost(name, healthy) for name in ("m1", "m2", "w1", "w2")}
    bound = Cluster(inventory_module.load(path), transport=lambda entry: hosts[entry.address])
    bound.master_json = lambda entry: (  # type: ignore[method-assign]
        worker_view("w1", "w2") if entry.address == "m1" else {"status": "STANDBY"})
    return bound, hosts


def roles_called(host: FakeHost) -> list[tuple[str, str]]:
    return [(action_of(c.argv)[0], action_of(c.argv)[1]) for c in host.calls
            if "daemon" in c.argv]


def test_the_ensemble_starts_first_and_stops_last_with_each_server_told_its_place(
        tmp_path: Path) -> None:
    bound, hosts = ensemble_cluster(tmp_path)
    assert bound.targets["m1"].roles == [("zookeeper", 1), ("master", 1)]
    assert bound.targets["w2"].roles == [("worker", 1)]
    env = {name: bound.host_env(bound.targets[name]) for name in hosts}
    assert env["w1"]["EMBER_ZOOKEEPER_ID"] == "3"
    assert env["m1"]["EMBER_ZOOKEEPER_SERVERS"] == "m1:2888:3888,m2:2888:3888,w1:2888:3888"
    assert env["m2"]["EMBER_ZOOKEEPER_URL"] == "m1:2181,m2:2181,w1:2181"
    assert "EMBER_ZOOKEEPER_ID" not in env["w2"] and "EMBER_ZOOKEEPER_URL" not in env["w2"]

    assert all(o.ok for o in lifecycle.start_all(bound, wait=5))
    assert roles_called(hosts["m1"]) == [("start", "zookeeper"), ("start", "master")]
    assert roles_called(hosts["w1"]) == [("start", "zookeeper"), ("start", "worker")]
    for host in hosts.values():
        host.calls.clear()
    assert all(o.ok for o in lifecycle.stop_all(bound))
    assert roles_called(hosts["m1"]) == [("stop", "master"), ("stop", "zookeeper")]
    assert roles_called(hosts["w1"]) == [("stop", "worker"), ("stop", "zookeeper")]
    assert roles_called(hosts["w2"]) == [("stop", "worker")]


def test_status_shows_each_ensemble_servers_mode_and_a_silent_one_is_unhealthy(
        tmp_path: Path) -> None:
    bound, _ = ensemble_cluster(tmp_path)
    modes = {"m1": "follower", "m2": "leader", "w1": None}
    bound.ensemble_mode = lambda target: modes[target.address]  # type: ignore[method-assign]
    rows = [(r["host"], r["role"], r["master_view"], r["ok"]) for r in status(bound)]
    assert rows == [("m1", "zookeeper", "FOLLOWER", True), ("m1", "master", "ALIVE", True),
                    ("m2", "zookeeper", "LEADER", True), ("m2", "master", "STANDBY", True),
                    ("w1", "zookeeper", "NO ANSWER", False), ("w1", "worker", "ALIVE", True),
                    ("w2", "worker", "ALIVE", True)]
