"""Cluster operations over an inventory: what every playbook task does, host by host.

Each operation runs on all hosts in parallel (or one after another with ``serial``), collects a
result per host and role instance, and never lets one host's failure hide another's result.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError, EmberError
from toolkit.hosts import Host, host_for
from toolkit.inventory import HostEntry, Inventory
from toolkit.render import render

Say = Callable[[str], None]


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
                 say: Say = print) -> None:
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
                port = inventory.setting(entry, "ssh_port")
                target = Target(name, [], host_for(entry, inventory.ssh, port),
                                inventory.home(entry), str(inventory.path_setting(entry, "python")))
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

    def each(self, targets: list[Target], work: Callable[[Target], list[Outcome]]
             ) -> list[Outcome]:
        """Run ``work`` per target, in parallel unless serial; a raised error is that host's."""
        def guarded(target: Target) -> list[Outcome]:
            try:
                outcomes = work(target)
            except (EmberError, OSError) as exc:
                roles = target.roles or [("host", 0)]
                outcomes = [Outcome(target.address, r, i, False, str(exc)) for r, i in roles]
            for outcome in outcomes:
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
        for entry in target.entries:
            if entry.group == "masters":
                env["EMBER_MASTER_HOST"] = inv.advertised(entry)
                env["EMBER_MASTER_PORT"] = str(inv.setting(entry, "port"))
                env["EMBER_MASTER_WEBUI_PORT"] = str(inv.setting(entry, "webui_port"))
            else:
                env["EMBER_MASTER_URL"] = inv.master_url()
                env["EMBER_WORKER_HOST"] = inv.advertised(entry)
                env["EMBER_WORKER_WEBUI_PORT"] = str(inv.setting(entry, "worker_webui_port"))
                for key, name in (("cores", "EMBER_WORKER_CORES"),
                                  ("memory", "EMBER_WORKER_MEMORY")):
                    if inv.setting(entry, key) is not None:
                        env[name] = str(inv.setting(entry, key))
                work_dir = inv.path_setting(entry, "work_dir")
                if work_dir:
                    env["EMBER_WORKER_DIR"] = work_dir
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

    def upload(self, target: Target, secret: bytes) -> bool:
        """Put ember-env.sh and the secret on the host; True if anything changed."""
        changed = target.host.put(target.conf_file(), self.env_file(target).encode(), 0o644)
        return target.host.put(target.secret_file(), secret, 0o600) or changed

    # Daemon commands -----------------------------------------------------------------------

    @staticmethod
    def daemon_argv(target: Target, *args: str) -> list[str]:
        """The host's own python (absolute path), running `ember daemon ARGS`."""
        return [target.python, "-m", "toolkit", "daemon", *args]

    def daemon(self, target: Target, *args: str, timeout: float = 120) -> Any:
        return target.host.run(self.daemon_argv(target, *args),
                               env={"EMBER_CONF_DIR": f"{target.home}/conf"}, timeout=timeout)

    def status_of(self, target: Target, role: str, instance: int) -> dict[str, Any]:
        result = self.daemon(target, "status", role, str(instance), "--json", timeout=30)
        try:
            info: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EmberError(f"status failed (exit {result.exited}): {result.tail(5)}") from None
        return info

    def _start_roles(self, target: Target, role: str, secret: bytes) -> list[Outcome]:
        self.upload(target, secret)
        outcomes = []
        for r, instance in target.roles:
            if r != role:
                continue
            info = self.status_of(target, role, instance)
            if info["code"] == 0:
                outcomes.append(Outcome(target.address, role, instance, True,
                                        f"already running as process {info['pid']}", info))
                continue
            result = self.daemon(target, "start", role, str(instance))
            if result.ok:
                info = self.status_of(target, role, instance)
                outcomes.append(Outcome(target.address, role, instance, True,
                                        f"started as process {info['pid']}", info))
            else:
                outcomes.append(Outcome(target.address, role, instance, False,
                                        f"failed to start (exit {result.exited})\n"
                                        f"{result.tail(12)}"))
        return outcomes

    def _stop_roles(self, target: Target, role: str) -> list[Outcome]:
        outcomes = []
        for r, instance in target.roles:
            if r != role:
                continue
            result = self.daemon(target, "stop", role, str(instance))
            last = (result.stdout.strip().splitlines() or ["stopped"])[-1]
            outcomes.append(Outcome(target.address, role, instance, result.ok,
                                    last if result.ok else f"failed to stop: {result.tail(5)}"))
        return outcomes

    # Operations ----------------------------------------------------------------------------

    def start_masters(self) -> list[Outcome]:
        secret = self.secret()
        return self.each(self.with_role("master"),
                         lambda t: self._start_roles(t, "master", secret))

    def start_workers(self, wait: float = 60.0) -> list[Outcome]:
        secret = self.secret()
        outcomes = self.each(self.with_role("worker"),
                             lambda t: self._start_roles(t, "worker", secret))
        started = [o for o in outcomes if o.ok]
        if started:
            outcomes += self.wait_alive(len(started), wait)
        return outcomes

    def start_all(self, wait: float = 60.0) -> list[Outcome]:
        outcomes = self.start_masters()
        if outcomes and not any(o.ok for o in outcomes):
            skipped = [Outcome(t.address, "worker", i, False, "not started: no master is up")
                       for t in self.with_role("worker") for r, i in t.roles if r == "worker"]
            for outcome in skipped:
                self.report(outcome)
            return outcomes + skipped
        return outcomes + self.start_workers(wait)

    def stop_workers(self) -> list[Outcome]:
        return self.each(self.with_role("worker"), lambda t: self._stop_roles(t, "worker"))

    def stop_masters(self) -> list[Outcome]:
        return self.each(self.with_role("master"), lambda t: self._stop_roles(t, "master"))

    def stop_all(self) -> list[Outcome]:
        outcomes = self.stop_workers() + self.stop_masters()
        if self.inventory.backend == "supervisor":
            def shutdown(target: Target) -> list[Outcome]:
                result = self.daemon(target, "supervisor-shutdown")
                return [] if result.ok else [Outcome(target.address, "supervisord", 0, False,
                                                     result.tail(5))]
            outcomes += self.each(list(self.targets.values()), shutdown)
        return outcomes

    # Master's view -------------------------------------------------------------------------

    def master_state(self) -> dict[str, Any] | None:
        """The first master's /json that answers, fetched from here."""
        for entry in self.inventory.masters:
            url = (f"http://{self.inventory.advertised(entry)}:"
                   f"{self.inventory.setting(entry, 'webui_port')}/json")
            try:
                with urllib.request.urlopen(url, timeout=3) as response:
                    state: dict[str, Any] = json.load(response)
                    return state
            except (OSError, ValueError):
                continue
        return None

    def expected_workers(self) -> list[tuple[str, int]]:
        """(advertised host, web UI port) of every worker instance in the inventory."""
        inv = self.inventory
        return [(inv.advertised(e), int(inv.setting(e, "worker_webui_port")) + i)
                for e in inv.workers for i in range(int(inv.setting(e, "instances")))]

    def wait_alive(self, count: int, timeout: float) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        alive = 0
        shown = -1
        while time.monotonic() < deadline:
            state = self.master_state()
            alive = state["aliveworkers"] if state else 0
            if alive != shown:
                self.say(f"waiting for workers: {alive} of {count} ALIVE in the master's view")
                shown = alive
            if alive >= count:
                return []
            time.sleep(0.2)
        outcome = Outcome("master", "view", 0, False,
                          f"only {alive} of {count} workers ALIVE after {timeout:g} s")
        self.report(outcome)
        return [outcome]

    def status(self) -> list[dict[str, Any]]:
        """One row per role instance: daemon state and the master's view of it."""
        state = self.master_state()
        workers = {}
        for worker in (state or {}).get("workers", []):
            port = int(worker["webuiaddress"].rpartition(":")[2] or 0)
            workers[(worker["host"], port)] = worker
        inv = self.inventory

        def rows_for(target: Target) -> list[Outcome]:
            outcomes = []
            for role, instance in target.roles:
                info = self.status_of(target, role, instance)
                entry = next(e for e in target.entries
                             if (e.group == "masters") == (role == "master"))
                if role == "master":
                    view = state["status"] if state and self._is_answering(entry) else "missing"
                    cores = memory = None
                else:
                    port = int(inv.setting(entry, "worker_webui_port")) + instance - 1
                    seen = workers.get((inv.advertised(entry), port))
                    view = seen["state"] if seen else "missing"
                    cores = f"{seen['coresused']}/{seen['cores']}" if seen else None
                    memory = f"{seen['memoryused']}/{seen['memory']}m" if seen else None
                row = {"host": target.address, "role": role, "instance": instance,
                       "daemon": info["state"], "pid": info["pid"], "uptime": info["uptime"],
                       "master_view": view, "cores": cores, "memory": memory}
                ok = info["code"] == 0 and view == "ALIVE"
                outcomes.append(Outcome(target.address, role, instance, ok, "", row))
            return outcomes

        quiet, self.say = self.say, lambda _line: None
        try:
            outcomes = self.each(list(self.targets.values()), rows_for)
        finally:
            self.say = quiet
        rows = []
        for outcome in outcomes:
            row = outcome.data or {"host": outcome.host, "role": outcome.role,
                                   "instance": outcome.instance, "daemon": "unreachable",
                                   "pid": None, "uptime": None, "master_view": "?",
                                   "cores": None, "memory": None, "error": outcome.message}
            row["ok"] = outcome.ok
            rows.append(row)
        return rows

    def _is_answering(self, entry: HostEntry) -> bool:
        url = (f"http://{self.inventory.advertised(entry)}:"
               f"{self.inventory.setting(entry, 'webui_port')}/readyz")
        try:
            with urllib.request.urlopen(url, timeout=3):
                return True
        except OSError:
            return False


def format_status(rows: list[dict[str, Any]]) -> str:
    from toolkit.daemon.procs import format_uptime

    header = ["HOST", "ROLE", "INST", "DAEMON", "PID", "UPTIME", "MASTER VIEW", "CORES", "MEMORY"]
    lines = [header]
    for row in rows:
        lines.append([row["host"], row["role"], str(row["instance"]), row["daemon"],
                      str(row["pid"] or "-"),
                      format_uptime(row["uptime"]) if row["uptime"] is not None else "-",
                      row["master_view"], row["cores"] or "-", row["memory"] or "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
    errors = [f"{r['host']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join([text, *errors])


def summary(task: str, outcomes: list[Outcome]) -> tuple[int, str]:
    failed = [o for o in outcomes if not o.ok]
    total = len(outcomes)
    if failed:
        hosts = ", ".join(sorted({o.host for o in failed}))
        return 1, f"{task}: {total - len(failed)} of {total} succeeded; failed on {hosts}"
    return 0, f"{task}: all {total} succeeded"


def render_all(cluster: Cluster, out: Path) -> list[Path]:
    """Write what every host would get, for review, without touching any host."""
    written = []
    for target in cluster.targets.values():
        folder = out / target.address
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ember-env.sh").write_text(cluster.env_file(target))
        env = f"EMBER_CONF_DIR={shlex.quote(target.home + '/conf')}"
        commands = [f"{env} {shlex.join(cluster.daemon_argv(target, 'start', r, str(i)))}"
                    for r, i in target.roles]
        (folder / "commands.txt").write_text("\n".join(commands) + "\n")
        written += [folder / "ember-env.sh", folder / "commands.txt"]
    return written
