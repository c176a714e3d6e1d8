"""The playbook against real hosts: network namespaces with their own sshd (see netlab.py).

One master host and three worker hosts, key-only SSH with verified host keys. The toolkit is
installed on each host by `fab deploy` once per module; the tests then run the real fab tasks.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netlab import Lab, LabHost, missing_requirements
from tests.procs import wait_for
from toolkit.lock import RUNTIME, drift, expected, extras, lock_dir, read_lock

ROOT = Path(__file__).resolve().parents[2]
FAB = Path(sys.executable).parent / "fab"
BASE_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")

pytestmark = pytest.mark.skipif(missing_requirements() is not None,
                                reason=str(missing_requirements()))


@dataclass
class Deployed:
    lab: Lab
    inventory: Path
    workdir: Path

    def fab(self, *args: str, inventory: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = [str(FAB), "-r", str(ROOT), *args, "--inventory", str(inventory or self.inventory)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    @property
    def master(self) -> str:
        return self.lab.hosts[0].address

    @property
    def workers(self) -> list[str]:
        return [h.address for h in self.lab.hosts[1:]]

    def ssh(self, host: LabHost, *argv: str) -> str:
        """A command on a lab host over SSH (host key checked); its output, or the test fails."""
        done = subprocess.run(
            ["ssh", "-i", str(self.lab.key), "-o", f"UserKnownHostsFile={self.lab.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
             f"root@{host.address}", shlex.join(argv)],
            capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def master_json(self) -> dict:  # type: ignore[type-arg]
        """The master's /json, over HTTPS (the lab's hosts are not loopback: TLS is on)."""
        from tests.procs import cluster_ca, get_json

        return get_json(  # type: ignore[no-any-return]
            f"https://{self.master}:8080/json", context=cluster_ca(self.workdir / "secret"))


def write_inventory(lab: Lab, path: Path, known_hosts: Path | None = None,
                    workers: str | None = None, run_user: str | None = None) -> Path:
    """``run_user``: None, the default (`ember`, which needs this machine's Python reachable:
    the lab fixture sees to that)."""
    worker_lines = workers or "\n".join(f"    - {h.address}" for h in lab.hosts[1:])
    path.write_text(f"""
cluster:
  name: lab
  backend: supervisor
  secret_file: {lab.workdir}/secret
ssh:
  user: root
  key_file: {lab.key}
  known_hosts: {known_hosts or lab.known_hosts}
  connect_timeout: 3
defaults:
  ember_home: {lab.common}/ember
  stop_timeout: 5
{f"  run_user: {run_user}" if run_user else ""}
masters:
  - host: {lab.hosts[0].address}
    worker_timeout: 2
workers:
  vars:
    cores: 1
    memory: 512m
  hosts:
{worker_lines}
""")
    return path


@contextmanager
def traversable(path: Path) -> Iterator[None]:
    """The lab's roles run as the unprivileged user `ember`, as on a real host, and must reach
    its Python: a directory closed to others on the way (this machine's pyenv under /root)
    is opened for traversal (o+x, not listing) meanwhile, and closed again after. The lab's
    hosts share this machine's files, /etc/passwd included: the user the playbook makes is
    removed after, unless it was here before."""
    changed = []
    real = path.resolve()
    for folder in [*reversed(real.parents), real.parent]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)
            changed.append((folder, stat.S_IMODE(mode)))
    had_user = subprocess.run(["id", "-u", "ember"], capture_output=True, check=False)
    try:
        yield
    finally:
        for folder, mode in reversed(changed):
            os.chmod(folder, mode)
        if had_user.returncode != 0:
            subprocess.run(["userdel", "ember"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def lab() -> Iterator[Deployed]:
    workdir = Path(tempfile.mkdtemp(prefix="ember-lab-"))
    workdir.chmod(0o711)  # the masters' shared recovery directory is in it (as on NFS)
    try:
        with traversable(Path(BASE_PYTHON)), Lab(workdir, 4) as running:
            deployed = Deployed(running, write_inventory(running, workdir / "lab.yml"), workdir)
            result = deployed.fab("deploy", "--python", BASE_PYTHON, timeout=900)
            assert result.returncode == 0, result.stdout + result.stderr
            yield deployed
    finally:  # the hosts' mounts lived in their own namespaces, gone with them: plain files
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def stopped(lab: Deployed) -> Iterator[Deployed]:
    """Each test starts from, and leaves, a cluster with nothing running."""
    yield lab
    lab.fab("stop-all")


def test_deploy_installed_the_toolkit_everywhere(lab: Deployed) -> None:
    result = lab.fab("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for address in [lab.master, *lab.workers]:
        assert f"{address}: doctor: ssh ok, host key verified, python 3." in result.stdout
    assert "toolkit 0.1.0, packages as locked" in result.stdout and "ports free" in result.stdout


DRIFT = """
import importlib.metadata, pathlib, sysconfig
idna = importlib.metadata.distribution("idna")
metadata = pathlib.Path(str(idna.locate_file(f"idna-{idna.version}.dist-info/METADATA")))
metadata.write_text(metadata.read_text().replace(f"Version: {idna.version}", "Version: 3.1"))
extra = pathlib.Path(sysconfig.get_paths()["purelib"]) / "leftover-1.0.dist-info"
extra.mkdir()
(extra / "METADATA").write_text("Metadata-Version: 2.1\\nName: leftover\\nVersion: 1.0\\n")
(extra / "RECORD").write_text("".join(f"leftover-1.0.dist-info/{name},,\\n"
                                     for name in ("METADATA", "RECORD")))
"""


def test_deploy_installs_exactly_the_lock_and_doctor_names_a_host_that_drifts(
        lab: Deployed) -> None:
    host = lab.lab.hosts[2]
    python = f"{lab.lab.common}/ember/venv/bin/python"
    listed = lab.ssh(host, python, "-m", "pip", "list", "--format", "json")
    installed = {d["name"]: d["version"] for d in json.loads(listed)}
    locked = expected(read_lock(lock_dir() / RUNTIME), None)  # the hosts run this Python
    assert drift(locked, installed) == [] and extras(locked, installed) == []
    assert installed["ember-toolkit"] == "0.1.0"  # beside it only the venv's own installers

    # the host drifts: idna's recorded version changes, a package the lock does not name appears
    lab.ssh(host, python, "-c", DRIFT)
    try:
        doctor = lab.fab("doctor")
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr
        assert (f"{host.address}: doctor: installed packages differ from lock/runtime.txt "
                f"(run fab deploy): idna 3.1 is installed, the lock has {locked['idna']}; "
                f"leftover 1.0 is installed but not in the lock" in doctor.stdout)
        assert doctor.stdout.count("packages as locked") == len(lab.lab.hosts) - 1
    finally:
        again = lab.fab("deploy", "--hosts", host.address, "--python", BASE_PYTHON,
                        timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (f"{host.address}: deploy: ember-toolkit 0.1.0 and {len(locked)} locked packages "
            f"installed in {lab.lab.common}/ember/venv; removed leftover") in again.stdout
    listed = lab.ssh(host, python, "-m", "pip", "list", "--format", "json")
    assert drift(locked, {d["name"]: d["version"] for d in json.loads(listed)}) == []
    assert lab.fab("doctor").returncode == 0


def test_ssh_uploads_of_one_path_in_parallel_do_not_collide_or_follow_planted_links(
        lab: Deployed) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from toolkit import inventory
    from toolkit.ops.cluster import host_for

    loaded = inventory.load(lab.inventory)
    entry = loaded.workers[0]
    host = lab.lab.hosts[1]
    assert entry.address == host.address
    folder = host.root / "home" / "uploads"  # the host's own view: {common}/uploads
    folder.mkdir()
    victim = host.root / "home" / "victim"
    victim.write_text("keep me\n")
    (folder / ".conf.tmp").symlink_to(victim)  # planted where a fixed temp name would be
    payloads = [f"version {n}\n".encode() * 1000 for n in range(8)]
    hosts = [host_for(entry, loaded.ssh) for _ in payloads]  # one connection each
    try:
        with ThreadPoolExecutor(len(hosts)) as pool:
            written = list(pool.map(lambda h, data: h.put(f"{lab.lab.common}/uploads/conf",
                                                          data), hosts, payloads))
    finally:
        for each in hosts:
            each.close()
    assert all(written)
    final = folder / "conf"
    assert not final.is_symlink() and final.read_bytes() in payloads
    assert victim.read_text() == "keep me\n"
    assert sorted(p.name for p in folder.iterdir()) == [".conf.tmp", "conf"]  # no temp left


def test_local_and_ssh_transports_report_exit_codes_and_timeouts_alike(lab: Deployed) -> None:
    import threading

    from toolkit import inventory
    from toolkit.ops.cluster import host_for
    from toolkit.ops.transport import LocalHost

    loaded = inventory.load(lab.inventory)
    remote = host_for(loaded.workers[0], loaded.ssh)
    try:
        for host in (LocalHost(), remote):
            done = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
            assert (done.exited, done.stdout, done.stderr) == (3, "out\n", "err\n"), host
            late = host.run(["sleep", "5"], timeout=1)
            assert late.exited == 124 and late.stderr.endswith("timed out after 1 s"), host
            lines: list[str] = []
            code = host.stream(["sh", "-c", "echo a; echo b; exit 4"], lines.append,
                               threading.Event())
            assert (code, lines) == (4, ["a", "b"]), host
    finally:
        remote.close()


def test_start_all_status_logs_and_stop_all(stopped: Deployed) -> None:
    lab = stopped
    before = {host.name: set(lab.lab.pids(host)) for host in lab.lab.hosts}  # sshd and unshare
    started = lab.fab("start-all")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"{lab.master}: master 1: ready as process" in started.stdout
    for address in lab.workers:
        assert f"{address}: worker 1: ready as process" in started.stdout
    assert "start-all: all 4 succeeded" in started.stdout
    state = lab.master_json()
    assert state["aliveworkers"] == 3
    assert sorted(w["host"] for w in state["workers"]) == sorted(lab.workers)
    # not root: the roles and every job run as the unprivileged user the playbook made
    users = {user for host in lab.lab.hosts
             for user in lab.ssh(host, "ps", "-o", "user=", "-C", "python,python3").split()}
    assert users == {"ember"}, users
    driver = submit(lab, "--wait", "--", "sh", "-c", "id -un")
    worker = host_of(lab, drivers(lab)[driver]["worker"])
    assert lab.ssh(worker, "cat", f"{lab.lab.common}/ember/work/{driver}/stdout").strip() == (
        "ember")
    # a job (the run user) can change nothing root runs or reads: the venv, ember-env.sh
    home = f"{lab.lab.common}/ember"
    probe = submit(lab, "--wait", "--", "sh", "-c",
                   f"for p in {home} {home}/conf {home}/conf/ember-env.sh {home}/venv "
                   f"{home}/venv/bin; do test -w $p && echo writable $p; done; echo checked")
    worker = host_of(lab, drivers(lab)[probe]["worker"])
    assert lab.ssh(worker, "cat", f"{home}/work/{probe}/stdout").strip() == "checked"

    status = lab.fab("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert [(r["host"], r["role"], r["daemon"], r["master_view"]) for r in rows] == [
        (lab.master, "master", "running", "ALIVE"),
        *[(a, "worker", "running", "ALIVE") for a in lab.workers]]
    assert all(isinstance(r["pid"], int) for r in rows)
    table = lab.fab("status").stdout
    assert table.splitlines()[0].split()[:4] == ["HOST", "ROLE", "INST", "DAEMON"]

    logs = lab.fab("logs", "-n", "50", "--grep", "Successfully registered")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    for address in lab.workers:
        assert f"{address}: worker 1: " in logs.stdout
    assert f"ember://{lab.master}:7077" in logs.stdout

    again = lab.fab("start-all")  # idempotent
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already running as process") == 4

    stopped_all = lab.fab("stop-all")
    assert stopped_all.returncode == 0, stopped_all.stdout + stopped_all.stderr
    for host in lab.lab.hosts:  # nothing but the host's sshd is left
        left = set(lab.lab.pids(host)) - before[host.name]
        assert not left, f"{host.name} still runs {left}"
    assert lab.fab("status").returncode == 1


def test_a_down_host_is_reported_and_the_others_start(stopped: Deployed) -> None:
    lab = stopped
    down = lab.lab.hosts[3]
    lab.lab.stop_host(down)
    try:
        result = lab.fab("start-all", "--wait", "10")
        assert result.returncode == 1
        assert (f"{down.address}: worker 1: cannot connect to port 22: Connection refused"
                in result.stdout)
        assert f"failed on {down.address}" in result.stdout
        assert lab.master_json()["aliveworkers"] == 2
    finally:
        lab.lab.start_sshd(down)
        lab.lab.wait_ssh(down)


def test_unknown_host_key_is_refused_clearly(stopped: Deployed) -> None:
    lab = stopped
    partial = lab.workdir / "partial_known_hosts"
    strange = lab.workers[0]
    partial.write_text("".join(line for line in lab.lab.known_hosts.read_text().splitlines(True)
                               if not line.startswith(strange + " ")))
    inventory = write_inventory(lab.lab, lab.workdir / "partial.yml", known_hosts=partial)
    result = lab.fab("start-all", "--wait", "10", inventory=inventory)
    assert result.returncode == 1
    assert f"{strange}: worker 1: host key unknown: not in {partial}" in result.stdout
    assert lab.master_json()["aliveworkers"] == 2
    lab.fab("stop-all", inventory=inventory)


def test_a_changed_host_key_shows_both_fingerprints(stopped: Deployed) -> None:
    lab = stopped
    other = lab.workdir / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    strange = lab.workers[0]
    changed = lab.workdir / "changed_known_hosts"
    lines = lab.lab.known_hosts.read_text().splitlines(True)
    public = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    changed.write_text("".join(f"{strange} {public}\n" if line.startswith(strange + " ")
                               else line for line in lines))
    inventory = write_inventory(lab.lab, lab.workdir / "changed.yml", known_hosts=changed)
    result = lab.fab("doctor", inventory=inventory)
    assert result.returncode == 1

    def fingerprint(pub: str) -> str:
        done = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", pub],
                              capture_output=True, text=True, check=True)
        return done.stdout.split()[1]

    real = lab.lab.hosts[1].root / "ssh_host_ed25519_key.pub"
    assert (f"{strange}: doctor: HOST KEY CHANGED: the host offered ssh-ed25519 "
            f"{fingerprint(str(real))}, {changed} expects ssh-ed25519 "
            f"{fingerprint(str(other.with_suffix('.pub')))}; refusing to connect"
            in result.stdout), result.stdout
    assert result.stdout.count("doctor: ssh ok") == len(lab.lab.hosts) - 1


def test_spark_style_workers_file(stopped: Deployed) -> None:
    lab = stopped
    workers = lab.workdir / "workers"
    workers.write_text("# Spark-style\n" + "".join(f"root@{a}\n" for a in lab.workers[:2]))
    inventory = lab.workdir / "with-workers-file.yml"
    text = write_inventory(lab.lab, inventory).read_text()
    inventory.write_text(text.split("workers:\n  vars:")[0] + "workers_file: workers\n")
    result = lab.fab("start-all", inventory=inventory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(w["host"] for w in lab.master_json()["workers"]) == sorted(lab.workers[:2])
    lab.fab("stop-all", inventory=inventory)


def test_cut_off_worker_shows_dead_in_the_masters_view(stopped: Deployed) -> None:
    lab = stopped
    assert lab.fab("start-all").returncode == 0
    cut = lab.lab.hosts[2]
    lab.lab.cut(cut)
    try:
        def dead() -> bool:
            return any(w["host"] == cut.address and w["state"] == "DEAD"
                       for w in lab.master_json()["workers"])
        wait_for(dead, 15, "the cut-off worker DEAD in the master's view")
        status = lab.fab("status", "--json", timeout=60)
        assert status.returncode == 1
        rows = {r["host"]: r for r in json.loads(status.stdout)}
        assert rows[cut.address]["master_view"] == "DEAD"
        assert rows[cut.address]["daemon"] == "unreachable"
        assert all(rows[a]["master_view"] == "ALIVE" for a in lab.workers if a != cut.address)
    finally:
        lab.lab.mend(cut)
    wait_for(lambda: lab.master_json()["aliveworkers"] == 3, 20, "the worker back after mend")


def test_two_masters_with_filesystem_recovery_lead_in_turn(stopped: Deployed) -> None:
    lab = stopped
    hosts = lab.lab.hosts
    inventory = ha_inventory(lab, "ha.yml", f"{{mode: filesystem, dir: {lab.workdir}/recovery}}")
    masters = {hosts[0].address, hosts[1].address}
    try:
        started = lab.fab("start-all", inventory=inventory)
        assert started.returncode == 0, started.stdout + started.stderr
        shown = lab.fab("status", inventory=inventory)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        rows = json.loads(lab.fab("status", "--json", inventory=inventory).stdout)
        views = {r["host"]: r["master_view"] for r in rows if r["role"] == "master"}
        assert sorted(views.values()) == ["ALIVE", "STANDBY"]
        leader = next(h for h, v in views.items() if v == "ALIVE")
        (other,) = masters - {leader}
        assert f"leader: {leader}" in shown.stdout

        stopped_leader = lab.fab("stop-master", "--hosts", leader, inventory=inventory)
        assert stopped_leader.returncode == 0, stopped_leader.stdout + stopped_leader.stderr

        def took_over() -> list[dict] | None:  # type: ignore[type-arg]
            now = json.loads(lab.fab("status", "--json", inventory=inventory).stdout)
            seen = {r["host"]: r for r in now}
            ok = (seen[other]["master_view"] == "ALIVE" and all(
                seen[h.address]["master_view"] == "ALIVE" for h in hosts[2:]))
            return now if ok else None

        from tests.procs import wait_for

        after = wait_for(took_over, 30, "the standby leading with every worker")
        assert [r["host"] for r in after if r["role"] == "master"
                and r["master_view"] == "ALIVE"] == [other]

        # the drill: back the other way, timed, and the old leader restarted as a standby
        assert lab.fab("start-master", "--hosts", leader, inventory=inventory).returncode == 0
        drill = lab.fab("failover", inventory=inventory)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        assert f"failover: stopping the leader {other} (2 workers" in drill.stdout
        assert f"{leader}: failover: leads after " in drill.stdout
        final = {r["host"]: r["master_view"] for r in json.loads(
            lab.fab("status", "--json", inventory=inventory).stdout) if r["role"] == "master"}
        assert final == {leader: "ALIVE", other: "STANDBY"}
    finally:
        lab.fab("stop-all", inventory=inventory)


def ha_inventory(lab: Deployed, name: str, recovery: str, timeout: float = 2) -> Path:
    """Masters on hosts 0 and 1, workers on hosts 2 and 3, with this recovery section."""
    hosts = lab.lab.hosts
    inventory = write_inventory(lab.lab, lab.workdir / name,
                                workers="\n".join(f"    - {h.address}" for h in hosts[2:]))
    inventory.write_text(inventory.read_text().replace(
        f"masters:\n  - host: {hosts[0].address}\n    worker_timeout: 2\n",
        f"recovery: {recovery}\n"
        f"masters:\n  - host: {hosts[0].address}\n    worker_timeout: {timeout:g}\n"
        f"  - host: {hosts[1].address}\n    worker_timeout: {timeout:g}\n"))
    return inventory


def test_a_three_node_ensemble_run_by_the_playbook_survives_a_server_and_a_leader(
        stopped: Deployed) -> None:
    """recovery.ensemble on three lab hosts: start-all starts ZooKeeper first, the masters
    lead and stand by through it; a ZooKeeper server killed -9 (its supervisor starts it
    again) costs nothing; the drill fails the leading master over; stop-all stops it last."""
    if not Path("/usr/share/java/zookeeper.jar").exists():
        pytest.skip("needs ZooKeeper: scripts/test installs Debian's zookeeper")
    lab = stopped
    hosts = lab.lab.hosts
    servers = [h.address for h in hosts[:3]]
    inventory = ha_inventory(lab, "zk.yml", "{mode: zookeeper, root: /lab, ensemble: "
                                            f"[{', '.join(servers)}]}}")
    try:
        started = lab.fab("start-all", inventory=inventory)
        assert started.returncode == 0, started.stdout + started.stderr
        for address in servers:
            assert f"{address}: zookeeper 1: ready as process" in started.stdout

        def rows() -> list[dict[str, Any]]:
            return list(json.loads(lab.fab("status", "--json", inventory=inventory).stdout))

        first = rows()
        modes = {r["host"]: r["master_view"] for r in first if r["role"] == "zookeeper"}
        assert sorted(modes.values()) == ["FOLLOWER", "FOLLOWER", "LEADER"]
        views = {r["host"]: r["master_view"] for r in first if r["role"] == "master"}
        assert sorted(views.values()) == ["ALIVE", "STANDBY"]
        leader = next(h for h, v in views.items() if v == "ALIVE")

        # the ZooKeeper leader's server dies: the others elect another; nobody steps down
        zk_leader = next(h for h, v in modes.items() if v == "LEADER")
        pid = next(r["pid"] for r in first if r["host"] == zk_leader and r["role"] == "zookeeper")
        host = next(h for h in hosts if h.address == zk_leader)
        java = lab.ssh(host, "pgrep", "-P", str(pid)).split()
        lab.ssh(host, "kill", "-9", *java)

        seen: list[list[dict[str, Any]]] = [first]

        def serving_again() -> list[dict[str, Any]] | None:
            seen.append(rows())
            return seen[-1] if all(r["ok"] for r in seen[-1]) else None

        try:
            after = wait_for(serving_again, 60, "every ZooKeeper server serving again")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {seen[-1]}") from None
        assert {r["host"]: r["master_view"] for r in after if r["role"] == "master"} == views
        masters_pids = {r["host"]: r["pid"] for r in first if r["role"] == "master"}
        assert {r["host"]: r["pid"] for r in after if r["role"] == "master"} == masters_pids

        drill = lab.fab("failover", inventory=inventory)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        assert f"failover: stopping the leader {leader}" in drill.stdout
        final = {r["host"]: r["master_view"] for r in rows() if r["role"] == "master"}
        assert final[leader] == "STANDBY"

        stopped_all = lab.fab("stop-all", inventory=inventory)
        assert stopped_all.returncode == 0, stopped_all.stdout + stopped_all.stderr
        assert stopped_all.stdout.index(f"{servers[0]}: master 1: ") < (
            stopped_all.stdout.index(f"{servers[0]}: zookeeper 1: "))
    finally:
        lab.fab("stop-all", inventory=inventory)


def drivers(lab: Deployed) -> dict[str, dict[str, Any]]:
    state = lab.master_json()
    return {d["id"]: d for d in state["activedrivers"] + state["completeddrivers"]}


def submit(lab: Deployed, *args: str) -> str:
    """`ember submit` on the master's host; the driver's id."""
    out = lab.ssh(lab.lab.hosts[0], f"{lab.lab.common}/ember/venv/bin/python", "-m", "toolkit",
                  "submit", "--master", f"ember://{lab.master}:7077", "--secret-file",
                  f"{lab.lab.common}/ember/conf/secret", "--tls-dir",
                  f"{lab.lab.common}/ember/conf/tls", "--memory", "64m", *args)
    return out.strip().splitlines()[-1]


def host_of(lab: Deployed, worker_id: str) -> LabHost:
    """The lab host of a worker id (worker-<time>-<host>-<port>)."""
    return next(h for h in lab.lab.hosts if worker_id.rsplit("-", 1)[0].endswith(h.address))


def test_a_partition_shorter_than_the_grace_kills_and_relaunches_nothing(
        stopped: Deployed) -> None:
    """The hosts of two workers cut off (links down: no reset, no FIN) for less than the
    worker timeout, then back: both drivers run on, same ids and workers, none relaunched
    or in ERROR, every worker ALIVE."""
    lab = stopped
    inventory = write_inventory(lab.lab, lab.workdir / "grace.yml")
    inventory.write_text(inventory.read_text().replace("worker_timeout: 2", "worker_timeout: 8"))
    started = lab.fab("start-all", inventory=inventory)
    assert started.returncode == 0, started.stdout + started.stderr
    plain = submit(lab, "--", "sleep", "300")
    supervised = submit(lab, "--supervise", "--", "sleep", "300")
    wait_for(lambda: all(drivers(lab)[d]["state"] == "RUNNING" for d in (plain, supervised)),
             30, "both drivers RUNNING")
    before = {d: drivers(lab)[d]["worker"] for d in (plain, supervised)}
    cut = {host_of(lab, w).name: host_of(lab, w) for w in before.values()}
    for host in cut.values():
        lab.lab.cut(host)
    try:
        time.sleep(4)  # half the worker timeout
    finally:
        for host in cut.values():
            lab.lab.mend(host)
    time.sleep(8)  # past the timeout since the cut: a lost worker would show by now
    now = drivers(lab)
    assert {d: (now[d]["state"], now[d]["worker"]) for d in before} == {
        d: ("RUNNING", w) for d, w in before.items()}
    assert set(now) == set(before)  # nothing relaunched under a new id
    assert lab.master_json()["aliveworkers"] == 3


def test_a_partition_longer_than_the_timeout_runs_a_waiting_driver_once(
        stopped: Deployed) -> None:
    """The only worker cut off past its timeout (DEAD in the master's view), a driver
    submitted meanwhile waits; once the link is back, the worker registers again, once, and
    the driver runs exactly once, FINISHED. A driver launched into the partition before the
    master noticed it ends ERROR with its worker and never runs once the link heals."""
    lab = stopped
    only = lab.lab.hosts[1]
    inventory = write_inventory(lab.lab, lab.workdir / "long.yml",
                                workers=f"    - {only.address}")
    started = lab.fab("start-all", inventory=inventory)
    assert started.returncode == 0, started.stdout + started.stderr
    shared = lab.workdir / "shared"  # where the drivers (the ember user) say they ran
    shared.mkdir(mode=0o1777, exist_ok=True)
    shared.chmod(0o1777)
    runs, ghost_runs = shared / "runs", shared / "ghost-runs"
    runs.unlink(missing_ok=True)
    ghost_runs.unlink(missing_ok=True)
    lab.lab.cut(only)
    try:
        ghost = submit(lab, "--", "sh", "-c", f"echo ran >> {ghost_runs}")
        wait_for(lambda: lab.master_json()["aliveworkers"] == 0, 20, "the worker DEAD")
        waiting = submit(lab, "--", "sh", "-c", f"echo ran >> {runs}; sleep 2")
        time.sleep(4)  # two more worker timeouts: heartbeats pile up on the worker's side
        assert drivers(lab)[waiting]["state"] == "SUBMITTED"
    finally:
        lab.lab.mend(only)
    final = wait_for(lambda: (lambda d: d if d["state"] not in ("SUBMITTED", "RUNNING")
                              else None)(drivers(lab)[waiting]), 60, "the driver done")
    master_log = lab.fab("logs", "-n", "60", "--role", "master", inventory=inventory).stdout
    assert final["state"] == "FINISHED", f"{final}\n{master_log}"
    assert runs.read_text() == "ran\n"  # once
    assert master_log.count("Registering worker") == 2  # at the start, and once after
    assert drivers(lab)[ghost]["state"] == "ERROR"
    assert not ghost_runs.exists()  # its launch, sent into the partition, never arrived
