"""Inventories: lookup order, the embedded default, Spark's workers file, and named errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from toolkit import inventory
from toolkit.errors import ConfigError


def load(tmp_path: Path, text: str, name: str = "inv.yml") -> inventory.Inventory:
    path = tmp_path / name
    path.write_text(text)
    return inventory.load(path)


GOOD = """
cluster: {name: prod}
ssh: {user: ops}
defaults: {ember_home: /opt/ember, nice: 1, cores: 2}
masters: [{host: m1}]
workers:
  vars: {cores: 4, memory: 8g}
  hosts:
    - w1
    - {host: w2, cores: 16, instances: 2}
    - admin@w3
"""


def test_lookup_is_host_then_group_then_defaults_then_builtin(tmp_path: Path) -> None:
    inv = load(tmp_path, GOOD)
    w1, w2, w3 = inv.workers
    assert inv.setting(w2, "cores") == 16       # host
    assert inv.setting(w1, "cores") == 4        # group vars
    assert inv.setting(inv.masters[0], "cores") == 2   # defaults
    assert inv.setting(w1, "nice") == 1         # defaults
    assert inv.setting(w1, "log_max_files") == 5  # built-in
    assert inv.setting(w1, "python") == "/opt/ember/venv/bin/python"
    assert w3.address == "admin@w3" and inv.advertised(w3) == "w3"
    assert inv.master_url() == "ember://m1:7077"


def test_embedded_local_inventory(tmp_path: Path) -> None:
    inv = inventory.load(inventory.default_inventory())
    (master,), (workers,) = inv.masters, inv.workers
    assert master.local and workers.local
    assert inv.setting(workers, "instances") == 2
    assert inv.setting(master, "python") == sys.executable
    assert Path(inv.home(master)).is_absolute()
    assert inv.master_url() == "ember://127.0.0.1:7077"


def test_spark_workers_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "workers"
    path.write_text("# comment\nw1  w2 # trailing\n\nops@w3\n")
    monkeypatch.setenv("EMBER_MASTER_HOST", "10.1.2.3")
    monkeypatch.setenv("EMBER_HOME", "/srv/ember")
    monkeypatch.setenv("EMBER_SSH_USER", "ops")
    monkeypatch.setenv("EMBER_SSH_KNOWN_HOSTS", str(tmp_path / "kh"))
    inv = inventory.load(path)
    assert [w.address for w in inv.workers] == ["w1", "w2", "ops@w3"]
    (master,) = inv.masters
    assert master.local and inv.advertised(master) == "10.1.2.3"
    assert inv.master_url() == "ember://10.1.2.3:7077"  # what remote workers are told
    assert inv.home(inv.workers[0]) == "/srv/ember"
    assert (inv.ssh.user, inv.ssh.known_hosts) == ("ops", tmp_path / "kh")


@pytest.mark.parametrize("master_host", [None, "localhost", "127.0.1.1", "::1"])
def test_a_workers_file_whose_master_would_bind_loopback_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master_host: str | None) -> None:
    """Spark's start-all.sh lets the master bind this machine's FQDN; on Debian that name
    often resolves to 127.0.1.1 and every remote worker then fails, 30 s later each."""
    path = tmp_path / "workers"
    path.write_text("10.77.0.11\n")
    if master_host is None:
        monkeypatch.delenv("EMBER_MASTER_HOST", raising=False)
        monkeypatch.setattr("socket.getfqdn", lambda: "localhost")  # as on such a machine
    else:
        monkeypatch.setenv("EMBER_MASTER_HOST", master_host)
    monkeypatch.setenv("EMBER_HOME", "/srv/ember")
    with pytest.raises(ConfigError) as caught:
        inventory.load(path)
    bind = master_host or "localhost"
    assert str(caught.value) == (
        f"{path}: the master on localhost would bind {bind}, a loopback address, so worker "
        f"10.77.0.11 (another host) could never reach it: set EMBER_MASTER_HOST to an address "
        f"the workers can reach")


def test_a_local_master_with_remote_workers_is_refused_and_local_workers_are_fine(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "the master on localhost would bind 127.0.0.1, a loopback address, so worker w1 "
            "(another host)")):
        load(tmp_path, "defaults: {ember_home: /srv/e}\nmasters: [localhost]\nworkers: [w1]\n")
    with pytest.raises(ConfigError, match=re.escape("the master on m1 would bind 127.0.0.1")):
        load(tmp_path, "defaults: {ember_home: /srv/e}\n"
                       "masters: [{host: m1, bind_host: 127.0.0.1}]\nworkers: [w1]\n")
    local = load(tmp_path, "masters: [localhost]\nworkers: [localhost]\n")
    assert local.master_url() == "ember://127.0.0.1:7077"


@pytest.mark.parametrize(("text", "error"), [
    ("masters: [m1]\nworkerz: []", "unknown key 'workerz' in top level"),
    ("masters: [{host: m1, cpus: 3}]", "unknown key 'cpus' in masters host m1"),
    ("masters: [m1]\nworkers: [{host: w1, cores: many}]",
     "workers host w1.cores: 'many' is not a positive whole number"),
    ("masters: [m1]\nworkers: [{host: w1, memory: 2048}]",
     "workers host w1.memory: '2048' has no unit: add m or g"),
    ("workers: [w1]", "no masters"),
    ("masters: [m1, m1]", "host m1 is listed twice under masters"),
    ("masters: [m1]\nworkers: {vars: {instances: 2}, hosts: [w1, ops@w1]}",
     "host w1 is listed twice under workers"),
    ("masters: [{host: m1, webui_port: 7077}]", "clashes with m1 masters port"),
    ("masters: [{host: m1, port: 70000}]",
     "masters host m1.port: '70000' is not a port number (1-65535)"),
    ("masters: [m1]\nworkers: [{host: w1, cores: -3}]",
     "w1.cores: '-3' is not a positive whole number"),
    ("masters: [m1]\nssh: {port: true}", "ssh.port must be a port number"),
    ("masters: [{host: m1, python: [1, 2]}]",
     "masters host m1.python: [1, 2] is not a text or a number"),
    ("masters: [m1]\nworkers: [\"w1\\n\"]", "is not a host"),
    ("masters: [m1]\ndefaults: {ember_home: ~/ember}",
     "ember_home '~/ember' for host m1 must be an absolute path"),
    ("masters: [m1]\nssh: {host_key_policy: yolo}", "ssh.host_key_policy 'yolo'"),
    ("masters: [m1]\nssh: {key_file: /nonexistent/key}", "ssh.key_file /nonexistent/key cannot"),
    ("masters: [m1]\ncluster: {backend: docker}",
     "cluster.backend: 'docker' is not one of supervisor, plain, systemd"),
    ("masters: [ 'bad host' ]", "'bad host' is not a host"),
    ("masters: [m1]\nrecovery: {mode: zk}",
     "recovery.mode: 'zk' is not one of none, filesystem, zookeeper"),
    ("masters: [m1]\nrecovery: {mode: filesystem}",
     "recovery.mode filesystem needs recovery.dir"),
    ("masters: [m1]\nrecovery: {mode: filesystem, dir: shared/ember}",
     "recovery.dir 'shared/ember' must be an absolute path"),
    ("masters: [m1]\nrecovery: {mode: filesystem, dir: /x, size: 3}", "recovery"),
    ("masters: [m1]\nrecovery: {mode: zookeeper}",
     "recovery.mode zookeeper needs recovery.zookeeper"),
    ("masters: [m1]\nrecovery: {mode: zookeeper, ensemble: [m1, w9, w8]}",
     "recovery.ensemble host w9 is not a host of the inventory"),
    ("masters: [m1]\nworkers: [w1]\nrecovery: {mode: zookeeper, ensemble: [m1, w1]}",
     "recovery.ensemble lists 2 hosts: an ensemble needs an odd number"),
    ("masters: [m1]\nrecovery: {mode: zookeeper, ensemble: [m1], zookeeper: 'z:2181'}",
     "not both"),
    ("masters: [m1]\nrecovery: {mode: filesystem, dir: /x, ensemble: [m1]}",
     "recovery.ensemble runs ZooKeeper for recovery.mode zookeeper, not filesystem"),
    ("masters: [m1]\nrecovery: {mode: zookeeper, ensemble: {hosts: [m1], peer_port: 2181}}",
     "client_port, peer_port and election_port must differ"),
    ("masters: [m1]\nrecovery: {mode: zookeeper, ensemble: {hosts: [m1], tick: 5}}",
     "recovery.ensemble: unknown key 'tick'"),
    ("masters: [m1]\nrecovery: {mode: zookeeper, ensemble: [m1, m1, m1]}",
     "recovery.ensemble: host m1 is listed twice"),
    ("masters: [m1\n", "not valid YAML"),
    ("masters: [{host: m1, rest_port: 8080}]", "m1 masters rest_port 8080 clashes with m1"),
    ("masters: [m1]\nworkers: [{host: w1, cleanup_interval: -1}]",
     "w1.cleanup_interval: '-1' is not a number of seconds (0: off)"),
    ("masters: [m1]\nworkers: [{host: w1, cleanup_ttl: 0}]",
     "w1.cleanup_ttl: '0' must be more than 0 seconds"),
    ("masters: [m1]\ndefaults: {nice: 30}", "defaults.nice: '30' is not a whole number from -20 "
                                            "to 19"),
    ("masters: [m1]\ndefaults: {nice: true}", "defaults.nice: True is not a text or a number"),
    ("masters: [m1]\ndefaults: {log_max_files: 2000}", "defaults.log_max_files: '2000' is not"),
    ("masters: [m1]\ndefaults: {stop_timeout: soon}",
     "defaults.stop_timeout: 'soon' is not a number of seconds"),
    ("masters: [m1]\ndefaults: {systemd_scope: global}",
     "defaults.systemd_scope: 'global' is not one of system, user"),
    ("masters: [m1]\ndefaults: {run_user: Jane Doe}",
     "defaults.run_user: 'Jane Doe' is not a user or group name"),
    ("masters: [m1]\ndefaults: {limit_nofile: 10}", "defaults.limit_nofile: '10' is not a whole"),
    ("masters: [m1]\ndefaults: {log_dir: ''}", "defaults.log_dir: '' is empty"),
    ("masters: [{host: m1, rest_port: 0}]", "m1.rest_port: '0' is not a port number (1-65535)"),
    ("masters: [{host: m1, ssh_port: 0}]", "m1.ssh_port: '0' is not a port number (1-65535)"),
    ("masters: [m1]\nworkers: [{host: w1, instances: 65}]",
     "w1.instances: '65' is not a whole number from 1 to 64"),
    ("masters: [{host: m1, bind_host: {a: 1}}]", "m1.bind_host: {'a': 1} is not a text or a"),
])
def test_bad_inventories_name_file_and_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert str(tmp_path / "inv.yml") in str(caught.value)
    assert error in str(caught.value)


def test_values_are_kept_as_written_and_a_quoted_number_is_the_number(tmp_path: Path) -> None:
    inv = load(tmp_path, "defaults: {stop_timeout: 2.5, memory: 4g, cores: '4', nice: '-3'}\n"
                         "masters: [m1]\nworkers: [{host: w1, worker_webui_port: '9000'}]\n")
    (w1,) = inv.workers
    assert (inv.setting(w1, "stop_timeout"), inv.setting(w1, "memory")) == (2.5, "4g")
    assert (inv.setting(w1, "cores"), inv.setting(w1, "nice")) == (4, -3)
    assert inv.setting(w1, "worker_webui_port") == 9000


def test_built_in_values_come_from_the_registry_as_an_inventory_writes_them(
        tmp_path: Path) -> None:
    inv = load(tmp_path, "masters: [m1]\nworkers: [w1]\ndefaults: {ember_home: /srv/e}\n")
    (w1,) = inv.workers
    values = {key: inv.setting(w1, key) for key in (
        "nice", "log_max_files", "stop_timeout", "instances", "port", "webui_port",
        "worker_webui_port", "systemd_scope", "restart_sec", "cores", "log_dir")}
    assert values == {"nice": 0, "log_max_files": 5, "stop_timeout": 10, "instances": 1,
                      "port": 7077, "webui_port": 8080, "worker_webui_port": 8081,
                      "systemd_scope": None, "restart_sec": None, "cores": None,
                      "log_dir": None}
    assert str(inv.setting(w1, "stop_timeout")) == "10"  # as ember-env.sh has always said
    assert inv.setting(w1, "ember_home") == "/srv/e"
    local = load(tmp_path, "masters: [localhost]\n")
    assert inv.setting(inv.masters[0], "python") == "/srv/e/venv/bin/python"
    assert local.home(local.masters[0]) == str(Path.home() / ".ember")


def test_bad_workers_file_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "workers"
    path.write_text("w1\nw2;rm -rf /\n")
    with pytest.raises(ConfigError, match=r"workers line 2: 'w2;rm' is not a host"):
        inventory.load(path)


def test_missing_inventory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        inventory.load(tmp_path / "nope.yml")


def test_an_ensemble_the_playbook_runs_gives_the_masters_its_servers(tmp_path: Path) -> None:
    inv = load(tmp_path, "masters: [m1, {host: m2, bind_host: 10.0.0.2}]\nworkers: [root@w1]\n"
                         "recovery: {mode: zookeeper, root: /prod, ensemble: {hosts: [m1, m2, "
                         "w1], client_port: 2182, tick_ms: 1000}}\n")
    assert inv.ensemble is not None and inv.ensemble.hosts == ("m1", "m2", "w1")
    assert inv.recovery == {"mode": "zookeeper", "root": "/prod",
                            "zookeeper": "m1:2182,10.0.0.2:2182,w1:2182"}
    assert inv.ensemble_servers() == [("m1", 2888, 3888), ("10.0.0.2", 2888, 3888),
                                      ("w1", 2888, 3888)]
    assert inv.ensemble.tick_ms == 1000


def test_a_key_given_twice_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "twice.yml"
    path.write_text("masters: [m1]\nworkers: [w1, w2]\nworkers: [w3]\n")
    with pytest.raises(ConfigError, match=r"twice.yml, line 3: 'workers' is given twice"):
        inventory.load(path)


def test_a_recovery_value_of_more_than_one_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.yml"
    path.write_text('masters: [m1, m2]\nworkers: [w1]\n'
                    'recovery: {mode: filesystem, dir: "/shared/x\\u2028EMBER_RUN_USER=root"}\n')
    with pytest.raises(ConfigError, match=r"recovery.dir: .* is not one line of text"):
        inventory.load(path)
