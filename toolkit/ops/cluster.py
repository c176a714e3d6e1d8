"""Cluster operations over an inventory: what every playbook task does, host by host.

Each operation runs on all hosts in parallel (or one after another with ``serial``), collects a
result per host and role instance, and never lets one host's failure hide another's result.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from toolkit import settings as settings_registry
from toolkit.daemon.protocol import Order, read_reports, read_statuses
from toolkit.errors import ConfigError, EmberError
from toolkit.files import bundle
from toolkit.inventory import HostEntry, Inventory
from toolkit.ops.transport import Host, Result, Session, host_for
from toolkit.render import render

Say = Callable[[str], None]
SYSTEMD_SETTINGS = {
    "systemd_scope": "EMBER_SYSTEMD_SCOPE", "systemd_output": "EMBER_SYSTEMD_OUTPUT",
    "run_user": "EMBER_RUN_USER", "run_group": "EMBER_RUN_GROUP",
    "restart_sec": "EMBER_RESTART_SEC", "limit_nofile": "EMBER_LIMIT_NOFILE",
    "watchdog_sec": "EMBER_WATCHDOG_SEC",
}


@dataclass
class Target:
    """One machine: its transport, its settings and the role instances it runs."""

    address: str
    entries: list[HostEntry]
    host: Host
    home: str
    python: str
    roles: list[tuple[str, int]] = field(default_factory=list)

    def conf_file(self) -> str:
        return f"{self.home}/conf/ember-env.sh"

    def secret_file(self) -> str:
        return f"{self.home}/conf/secret"

    def instances(self, role: str) -> list[int]:
        return [i for r, i in self.roles if r == role]


@dataclass(frozen=True)
class Outcome:
    host: str
    role: str
    instance: int
    ok: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class Cluster:
    """An inventory bound to transports, with the operations of the playbook."""

    def __init__(self, inventory: Inventory, hosts: Iterable[str] | None = None,
                 roles: Iterable[str] | None = None, serial: bool = False,
                 say: Say = print, transport: Callable[[HostEntry], Host] | None = None
                 ) -> None:
        """``transport`` makes each host's transport (default: local or SSH by address)."""
        self.inventory = inventory
        self.serial = serial
        self.say = say
        self._lock = threading.Lock()
        wanted_hosts = set(hosts) if hosts else None
        wanted_roles = set(roles) if roles else {"master", "worker"}
        unknown = wanted_roles - {"master", "worker"}
        if unknown:
            raise ConfigError(f"unknown role {sorted(unknown)[0]!r}: use master or worker")
        self.targets: dict[str, Target] = {}
        for entry in inventory.hosts:
            name = entry.address.rpartition("@")[2]
            if wanted_hosts is not None and name not in wanted_hosts:
                continue
            target = self.targets.get(name)
            if target is None:
                host = transport(entry) if transport else host_for(
                    entry, inventory.ssh, inventory.setting(entry, "ssh_port"))
                target = Target(name, [], host, inventory.home(entry),
                                str(inventory.path_setting(entry, "python")))
                self.targets[name] = target
            target.entries.append(entry)
            role = "master" if entry.group == "masters" else "worker"
            if role in wanted_roles:
                count = 1 if role == "master" else int(inventory.setting(entry, "instances"))
                target.roles += [(role, i + 1) for i in range(count)]
        if wanted_hosts:
            missing = wanted_hosts - set(self.targets)
            if missing:
                raise ConfigError(f"{inventory.path}: no host {sorted(missing)[0]!r} in the "
                                  f"inventory")

    def close(self) -> None:
        for target in self.targets.values():
            target.host.close()

    # Fan-out -----------------------------------------------------------------------------

    def each(self, targets: list[Target], work: Callable[[Target], list[Outcome]],
             label: str | None = None, quiet: bool = False) -> list[Outcome]:
        """Run ``work`` per target, in parallel unless serial; a raised error is that host's,
        for each of its role instances, or once under ``label`` (a host-wide task). Each
        outcome is reported as it comes, unless ``quiet`` (the caller prints them its way)."""
        def guarded(target: Target) -> list[Outcome]:
            try:
                outcomes = work(target)
            except Exception as exc:  # one host's failure, whatever it is, stays that host's
                text = str(exc) if isinstance(exc, (EmberError, OSError)) else (
                    f"{exc.__class__.__name__}: {exc}")
                roles = [(label, 0)] if label else target.roles or [("host", 0)]
                outcomes = [Outcome(target.address, r, i, False, text) for r, i in roles]
            for outcome in outcomes if not quiet else ():
                self.report(outcome)
            return outcomes

        if self.serial or len(targets) <= 1:
            return [o for t in targets for o in guarded(t)]
        with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
            return [o for result in pool.map(guarded, targets) for o in result]

    def report(self, outcome: Outcome) -> None:
        what = f"{outcome.role} {outcome.instance}" if outcome.instance else outcome.role
        with self._lock:
            for n, line in enumerate(outcome.message.splitlines() or [""]):
                self.say(f"{outcome.host}: {what if n == 0 else ' ' * len(what)}"
                         f"{':' if n == 0 else ' '} {line}")

    def emit(self, line: str) -> None:
        """One line of output, whole, whichever thread says it."""
        with self._lock:
            self.say(line)

    def with_role(self, role: str) -> list[Target]:
        return [t for t in self.targets.values() if any(r == role for r, _ in t.roles)]

    # Files ---------------------------------------------------------------------------------

    def host_env(self, target: Target) -> dict[str, str]:
        """Every EMBER_* setting of one host, as its ember-env.sh holds them."""
        inv = self.inventory
        first = target.entries[0]
        env = {
            "EMBER_HOME": target.home,
            "EMBER_CONF_DIR": f"{target.home}/conf",
            "EMBER_DAEMON_BACKEND": inv.backend,
            "EMBER_NICENESS": str(inv.setting(first, "nice")),
            "EMBER_LOG_MAX_FILES": str(inv.setting(first, "log_max_files")),
            "EMBER_STOP_TIMEOUT": str(inv.setting(first, "stop_timeout")),
            "EMBER_SECRET_FILE": target.secret_file(),
        }
        for key, name in (("log_dir", "EMBER_LOG_DIR"), ("pid_dir", "EMBER_PID_DIR")):
            value = inv.path_setting(first, key)
            if value:
                env[name] = value
        for key, name in SYSTEMD_SETTINGS.items():
            if inv.setting(first, key) is not None:
                env[name] = str(inv.setting(first, key))
        for entry in target.entries:  # the roles' settings, as toolkit/settings.py maps them
            role = "master" if entry.group == "masters" else "worker"
            if role == "worker":
                env["EMBER_MASTER_URL"] = inv.master_url()
            for setting in settings_registry.of_role(role):
                if setting.key is None:
                    continue
                value = (inv.advertised(entry) if setting.kind == "address" else
                         inv.path_setting(entry, setting.key) if setting.kind == "path" else
                         inv.setting(entry, setting.key))
                if value is not None and value != "":
                    env[setting.env] = str(value)
        return env

    def env_file(self, target: Target) -> str:
        return render("ember-env.sh.j2", host=target.address, env=self.host_env(target))

    def secret(self) -> bytes:
        """The cluster secret: generated (mode 0600) on first use, then reused."""
        path = self.inventory.secret_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            self.say(f"generated the cluster secret in {path} (mode 0600)")
        from toolkit.runtime.config import read_secret_file

        read_secret_file(path)  # same checks as the daemons apply
        return path.read_bytes()

    def files(self, target: Target, secret: bytes) -> bytes:
        """The host's ember-env.sh and the secret, bundled for `--files-from-stdin`."""
        return bundle([(target.conf_file(), self.env_file(target).encode(), 0o644),
                       (target.secret_file(), secret, 0o600)])

    # Daemon commands -----------------------------------------------------------------------

    @staticmethod
    def daemon_argv(target: Target, *args: str) -> list[str]:
        """The host's own python (absolute path), running `ember daemon ARGS`."""
        return [target.python, "-m", "toolkit", "daemon", *args]

    def daemon(self, target: Target, *args: str, timeout: float = 120) -> Any:
        return target.host.run(self.daemon_argv(target, *args),
                               env={"EMBER_CONF_DIR": f"{target.home}/conf"}, timeout=timeout)

    def status_of(self, target: Target, role: str, instance: int) -> dict[str, Any]:
        return self.statuses(target, role, [instance])[instance]

    def statuses(self, target: Target, role: str, instances: list[int]
                 ) -> dict[int, dict[str, Any]]:
        """`ember daemon status` of several instances in one remote call."""
        result = self.daemon(target, "status", role, ",".join(map(str, instances)), "--json",
                             timeout=30)
        try:
            found = read_statuses(result.stdout)
        except ValueError:
            found = {}
        if not set(instances) <= set(found):  # it timed out, crashed or said something else
            raise EmberError(f"status failed (exit {result.exited}): {result.tail(5)}")
        return found

    def begin(self, target: Target, action: str, role: str, *flags: str,
              files: bytes | None = None) -> Session:
        """`ember daemon ACTION ROLE 1,2 FLAGS` for the host's instances of ``role``,
        as one remote command whose standard input stays open (for --when-told). With
        ``files``, the host's files travel on that input: one SSH session does it all."""
        argv = self.daemon_argv(target, action, role, ",".join(map(str, target.instances(role))),
                                *flags, *(["--files-from-stdin"] if files else []))
        session = target.host.start(argv, env={"EMBER_CONF_DIR": f"{target.home}/conf"})
        if files:
            session.send(files)
        return session

    @staticmethod
    def outcomes(target: Target, action: str, role: str, result: Result) -> list[Outcome]:
        """One outcome per instance from the command's JSON lines; an instance it did not
        report on failed with the command's exit code and the tail of its output."""
        said = read_reports(result.stdout, role)
        outcomes = []
        for instance in target.instances(role):
            report = said.get(instance)
            if report is None:
                outcomes.append(Outcome(target.address, role, instance, False,
                                        f"failed to {action} (exit {result.exited})\n"
                                        f"{result.tail(12)}"))
                continue
            lines = [line.removeprefix(f"{role} {instance} ") for line in report.lines]
            if report.code == 0:
                outcomes.append(Outcome(target.address, role, instance, True,
                                        lines[-1] if lines else "done"))
            elif lines and lines[-1].startswith("not "):  # told not to go ahead
                outcomes.append(Outcome(target.address, role, instance, False, lines[-1]))
            else:
                outcomes.append(Outcome(target.address, role, instance, False, "\n".join(
                    [f"failed to {action} (exit {report.code})", *lines])))
        return outcomes

    def _do(self, target: Target, action: str, role: str, *flags: str,
            secret: bytes | None = None) -> list[Outcome]:
        """ACTION on every instance of ``role`` on the host, in one remote command."""
        if not target.instances(role):
            return []
        files = self.files(target, secret) if secret is not None else None
        result = self.begin(target, action, role, "--json", *flags, files=files).finish(
            timeout=120)
        return self.outcomes(target, action, role, result)

    def _gated(self, targets: list[Target], action: str, role: str, *flags: str,
               secret: bytes | None = None) -> Callable[[bytes], list[Outcome]]:
        """Open ACTION --when-told on every target now, in the background: each host gets
        ready (connects, receives its files, starts supervisord) while something else runs.
        The returned function sends the order (`go` or `skip REASON`) and collects outcomes."""
        def open_one(target: Target) -> Session:
            files = self.files(target, secret) if secret is not None else None
            return self.begin(target, action, role, "--json", *flags, "--when-told",
                              files=files)

        pool = ThreadPoolExecutor(max_workers=min(32, max(1, len(targets))))
        opening = {t.address: pool.submit(open_one, t) for t in targets}
        pool.shutdown(wait=False)

        def order(line: bytes) -> list[Outcome]:
            def finish(target: Target) -> list[Outcome]:
                result = opening[target.address].result().finish(line, timeout=120)
                return self.outcomes(target, action, role, result)
            return self.each(targets, finish)
        return order

    def connect_all(self) -> None:
        """Open every host's connection at once; a failure is kept and reported later."""
        with ThreadPoolExecutor(max_workers=min(32, max(1, len(self.targets)))) as pool:
            for target in self.targets.values():
                pool.submit(self._try_connect, target)

    @staticmethod
    def _try_connect(target: Target) -> None:
        with contextlib.suppress(EmberError, OSError):
            target.host.connect()

    # Operations ----------------------------------------------------------------------------

    def start_masters(self, wait: float = 60.0) -> list[Outcome]:
        secret = self.secret()
        return self.each(self.with_role("master"), lambda t: self._do(
            t, "start", "master", "--if-stopped", "--timeout", f"{wait:.1f}", secret=secret))

    def start_workers(self, wait: float = 60.0) -> list[Outcome]:
        deadline = time.monotonic() + wait
        secret = self.secret()
        return self._until_alive(self.each(self.with_role("worker"), lambda t: self._do(
            t, "start", "worker", "--if-stopped", "--timeout", f"{_left(deadline):.1f}",
            secret=secret)), deadline)

    def _until_alive(self, outcomes: list[Outcome], deadline: float) -> list[Outcome]:
        """Wait until every worker started is ALIVE in the master's view, up to the deadline;
        late ones fail and are stopped."""
        expected = {self.worker_address(self.targets[o.host], o.instance)
                    for o in outcomes if o.ok and o.role == "worker"}
        if expected:
            late = self.wait_alive(expected, deadline)
            late_keys = {(o.host, o.instance) for o in late}
            outcomes = [o for o in outcomes if (o.host, o.instance) not in late_keys] + late
        return outcomes

    def worker_address(self, target: Target, instance: int) -> tuple[str, int]:
        """(advertised host, web UI port) by which the master's /json lists this instance."""
        entry = next(e for e in target.entries if e.group == "workers")
        port = int(self.inventory.setting(entry, "worker_webui_port")) + instance - 1
        return self.inventory.advertised(entry), port

    def start_all(self, wait: float = 60.0) -> list[Outcome]:
        """Masters first, workers once a master is ready. Meanwhile every worker host gets
        ready: connected, files installed, supervisord started; its workers wait for `go`."""
        deadline = time.monotonic() + wait  # --wait bounds the whole run
        if self.serial:
            outcomes = self.start_masters(wait)
            return outcomes + self.start_workers(_left(deadline))
        secret = self.secret()
        workers = self._gated(self.with_role("worker"), "start", "worker", "--if-stopped",
                              secret=secret)
        outcomes = self.start_masters(wait)
        if outcomes and not any(o.ok for o in outcomes):
            return outcomes + workers(Order(False, reason="no master is up").line())
        return self._until_alive(outcomes + workers(Order(True, _left(deadline)).line()),
                                 deadline)

    def stop_workers(self) -> list[Outcome]:
        return self.each(self.with_role("worker"), lambda t: self._do(t, "stop", "worker"))

    def stop_masters(self) -> list[Outcome]:
        return self.each(self.with_role("master"), lambda t: self._do(t, "stop", "master"))

    def stop_all(self) -> list[Outcome]:
        """Workers, then masters; each host's supervisord goes with its last role. The
        masters' commands are opened at once and told to go when the workers are done."""
        masters = self.with_role("master")

        def stop_workers(target: Target) -> list[Outcome]:
            last = target not in masters
            return self._do(target, "stop", "worker", *(["--shutdown-supervisor"] * last))

        if self.serial:
            return self.each(self.with_role("worker"), stop_workers) + self.each(
                masters, lambda t: self._do(t, "stop", "master", "--shutdown-supervisor"))
        stop_masters = self._gated(masters, "stop", "master", "--shutdown-supervisor")
        return self.each(self.with_role("worker"), stop_workers) + stop_masters(Order(True).line())

    # systemd units -------------------------------------------------------------------------

    def install_systemd(self, scope: str | None = None, now: bool = False) -> list[Outcome]:
        """Render and install each host's units, daemon-reload, enable (and start, with
        ``now``): master hosts first, as start-all does, then worker hosts in parallel."""
        secret = self.secret()

        def install(target: Target, role: str) -> list[Outcome]:
            # the scope travels as a flag: the host checks for systemd before it writes a file
            chosen = scope or str(self.inventory.setting(target.entries[0], "systemd_scope")
                                  or "system")
            result = self.begin(target, "install-systemd", role, "--scope", chosen,
                                *(["--now"] if now else []),
                                files=self.files(target, secret)).finish(timeout=180)
            lines = (result.stdout + result.stderr).strip().splitlines()
            return [Outcome(target.address, role, 0, result.ok, (
                lines[-1] if lines else "done") if result.ok else
                f"failed (exit {result.exited})\n{result.tail(12)}")]

        return (self.each(self.with_role("master"), lambda t: install(t, "master")) +
                self.each(self.with_role("worker"), lambda t: install(t, "worker")))

    def uninstall_systemd(self, scope: str | None = None) -> list[Outcome]:
        """Stop, disable and remove every Ember unit on every host; daemon-reload."""
        def uninstall(target: Target) -> list[Outcome]:
            result = self.daemon(target, "uninstall-systemd",
                                 *(["--scope", scope] if scope else []), timeout=180)
            return [Outcome(target.address, "units", 0, result.ok,
                            result.tail(1) if result.ok else
                            f"failed (exit {result.exited})\n{result.tail(12)}")]
        return self.each(list(self.targets.values()), uninstall, label="units")

    # Master's view -------------------------------------------------------------------------

    def master_json(self, entry: HostEntry) -> dict[str, Any] | None:
        url = (f"http://{self.inventory.advertised(entry)}:"
               f"{self.inventory.setting(entry, 'webui_port')}/json")
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                state: dict[str, Any] = json.load(response)
                return state
        except (OSError, ValueError):
            return None

    def alive_in_master(self) -> set[tuple[str, int]]:
        """The ALIVE workers in the view of the first master that answers and is ALIVE."""
        state = first_alive([s for s in map(self.master_json, self.inventory.masters) if s]) or {}
        return {(w["host"], int(w["webuiaddress"].rpartition(":")[2] or 0))
                for w in state.get("workers", []) if w["state"] == "ALIVE"}

    def wait_alive(self, expected: set[tuple[str, int]], deadline: float) -> list[Outcome]:
        """Wait until each expected worker instance is ALIVE in the master's /json, up to the
        deadline. Late ones fail and are stopped: none is left retrying on its own."""
        shown = -1
        while True:
            missing = expected - self.alive_in_master()
            alive = len(expected) - len(missing)
            if alive != shown:
                self.say(f"waiting for workers: {alive} of {len(expected)} ALIVE in the "
                         f"master's view")
                shown = alive
            if not missing:
                return []
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        late = {t.address: [i for r, i in t.roles
                            if r == "worker" and self.worker_address(t, i) in missing]
                for t in self.with_role("worker")}

        def stop_late(target: Target) -> list[Outcome]:
            instances = late[target.address]
            result = self.daemon(target, "stop", "worker", ",".join(map(str, instances)),
                                 timeout=self.stop_bound(target))
            what = "stopped" if result.ok else (
                f"could not be stopped (exit {result.exited}): run `ember daemon stop worker "
                f"{','.join(map(str, instances))}` on {target.address}\n{result.tail(3)}")
            return [Outcome(target.address, "worker", i, False,
                            f"not ALIVE in the master's view within --wait: {what}")
                    for i in instances]

        return self.each([t for t in self.with_role("worker") if late[t.address]], stop_late)

    def stop_bound(self, target: Target) -> float:
        """How long a stop may take on this host: its stop timeout, SIGKILL, a margin."""
        return float(self.inventory.setting(target.entries[0], "stop_timeout")) + 30

def _left(deadline: float) -> float:
    """Seconds to a deadline; at least one, so a late step still gets a fair try."""
    return max(1.0, deadline - time.monotonic())


def summary(task: str, outcomes: list[Outcome]) -> tuple[int, str]:
    failed = [o for o in outcomes if not o.ok]
    total = len(outcomes)
    if failed:
        hosts = ", ".join(sorted({o.host for o in failed}))
        return 1, f"{task}: {total - len(failed)} of {total} succeeded; failed on {hosts}"
    return 0, f"{task}: all {total} succeeded"


def first_alive(answers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The active master's view: the first ALIVE one, else any that answered."""
    alive = [s for s in answers if s.get("status") == "ALIVE"]
    return (alive or answers)[0] if answers else None
