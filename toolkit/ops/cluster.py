"""An inventory bound to transports: the hosts (targets) and their role instances, the files
each host gets, and the `ember daemon` commands run there, read through the protocol module.

The operations (lifecycle.py, units.py, status.py, logs.py, provision.py, preview.py) compose
these. Fan-out is group.py's (a result per host, never printed); what happens is told to an
Events sink, which the playbook makes a Printer (show.py).
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from toolkit import settings as settings_registry
from toolkit.base.files import bundle
from toolkit.daemon.protocol import read_reports, read_statuses
from toolkit.daemon.settings import ROLES
from toolkit.errors import ConfigError, EmberError
from toolkit.inventory import HostEntry, Inventory, SSHSettings
from toolkit.ops.credentials import TLS_DIR, Credentials
from toolkit.ops.group import Events, Outcome, Silent, run_each
from toolkit.ops.ssh import SSHHost
from toolkit.ops.transport import Host, LocalHost, Result, Session
from toolkit.render import render

RECOVERY_KEYS = {"mode": "recovery_mode", "dir": "recovery_dir", "zookeeper": "zookeeper_url",
                 "root": "zookeeper_dir"}
"""The inventory's recovery section -> the masters' settings."""


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


class Cluster:
    """An inventory bound to transports, with the operations of the playbook."""

    def __init__(self, inventory: Inventory, hosts: Iterable[str] | None = None,
                 roles: Iterable[str] | None = None, serial: bool = False,
                 events: Events | None = None,
                 transport: Callable[[HostEntry], Host] | None = None) -> None:
        """``transport`` makes each host's transport (default: local or SSH by address);
        ``events`` hears outcomes as they come and notes (default: nobody)."""
        self.inventory = inventory
        self.serial = serial
        self.events: Events = events or Silent()
        self.credentials = Credentials(inventory, self.events)
        wanted_hosts = set(hosts) if hosts else None
        wanted_roles = set(roles) if roles else set(ROLES)
        unknown = wanted_roles - set(ROLES)
        if unknown:
            raise ConfigError(f"unknown role {sorted(unknown)[0]!r}: use master, worker or "
                              f"zookeeper")
        ensemble = inventory.ensemble.hosts if inventory.ensemble else ()
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
                if name in ensemble and "zookeeper" in wanted_roles:
                    target.roles.append(("zookeeper", 1))
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
             label: str | None = None, quiet: bool = False, parallel: bool = False
             ) -> list[Outcome]:
        """``work`` on every target (group.py), each outcome told to the events as it comes
        unless ``quiet``; every host's outcomes, in the targets' order. ``parallel`` even with
        --serial."""
        return run_each(targets, work, self.serial and not parallel, label,
                        None if quiet else self.events.outcome).outcomes()

    def with_role(self, role: str) -> list[Target]:
        return [t for t in self.targets.values() if any(r == role for r, _ in t.roles)]

    # Files ---------------------------------------------------------------------------------

    def host_env(self, target: Target) -> dict[str, str]:
        """Every EMBER_* setting of one host, as its ember-env.sh holds them: the host-wide
        settings, then each of its roles', as the settings registry maps inventory keys."""
        inv = self.inventory
        env = {"EMBER_HOME": target.home, "EMBER_CONF_DIR": f"{target.home}/conf",
               "EMBER_DAEMON_BACKEND": inv.backend, "EMBER_SECRET_FILE": target.secret_file()}
        if inv.uses_tls:
            env["EMBER_TLS_DIR"] = f"{target.home}/{TLS_DIR}"
        chosen = [(target.entries[0], s) for s in settings_registry.host_wide()]
        env.update(self.ensemble_env(target))
        for entry in target.entries:
            role = "master" if entry.group == "masters" else "worker"
            if role == "worker":
                env["EMBER_MASTER_URL"] = inv.master_url()
            else:  # the inventory's recovery section, for every master
                for key, text in inv.recovery.items():
                    name = RECOVERY_KEYS[key]
                    env[settings_registry.named("master", name).env] = text
            chosen += [(entry, s) for s in (*settings_registry.of_role(role),
                                            *settings_registry.of_role("common")) if s.key]
        for entry, setting in chosen:
            assert setting.key is not None
            value = (inv.advertised(entry) if setting.kind == "address" else
                     inv.path_setting(entry, setting.key) if setting.kind == "path" else
                     inv.setting(entry, setting.key))
            if value is not None and value != "":
                env[setting.env] = str(value)
        return env

    def ensemble_env(self, target: Target) -> dict[str, str]:
        """EMBER_ZOOKEEPER_* of a host that runs a server of the inventory's ensemble."""
        ensemble = self.inventory.ensemble
        if ensemble is None or target.address not in ensemble.hosts:
            return {}
        values = {
            "server_id": str(ensemble.hosts.index(target.address) + 1),
            "servers": ",".join(f"{h}:{p}:{e}" for h, p, e in self.inventory.ensemble_servers()),
            "client_port": str(ensemble.client_port), "tick_ms": str(ensemble.tick_ms)}
        return {settings_registry.named("zookeeper", k).env: v for k, v in values.items()}

    def env_file(self, target: Target) -> str:
        return render("ember-env.sh.j2", host=target.address, env=self.host_env(target))

    def secret(self) -> bytes:
        """The cluster secret file's content: generated (mode 0600) on first use."""
        return self.credentials.secret()

    def tls_names(self, target: Target) -> list[str]:
        """What a host's certificate names: the addresses its roles bind, then its own."""
        names = [self.inventory.advertised(e) for e in target.entries]
        names.append(target.address)
        if any(e.local for e in target.entries):
            names += ["127.0.0.1", "localhost"]
        return list(dict.fromkeys(names))

    def files(self, target: Target, secret: bytes) -> bytes:
        """The host's ember-env.sh, the secret and (with TLS) its TLS files, bundled for
        `--files-from-stdin`."""
        files = [(target.conf_file(), self.env_file(target).encode(), 0o644),
                 (target.secret_file(), secret, 0o600)]
        if self.inventory.uses_tls:
            files += self.credentials.files(target.home, target.address,
                                            self.tls_names(target))
        return bundle(files)

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

    def do(self, target: Target, action: str, role: str, *flags: str,
            secret: bytes | None = None) -> list[Outcome]:
        """ACTION on every instance of ``role`` on the host, in one remote command."""
        if not target.instances(role):
            return []
        files = self.files(target, secret) if secret is not None else None
        # a stop may take each instance's stop timeout, then SIGKILL: never cut it short
        stop = float(self.inventory.setting(target.entries[0], "stop_timeout") or 0) + 30
        result = self.begin(target, action, role, "--json", *flags, files=files).finish(
            timeout=max(120.0, stop))
        return self.outcomes(target, action, role, result)

    def gated(self, targets: list[Target], action: str, role: str, *flags: str,
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
        """Open every host's connection at once; a failure is kept by the host's transport
        and reported by the call that needs it."""
        def connect(target: Target) -> list[Outcome]:
            target.host.connect()
            return []

        run_each(list(self.targets.values()), connect)

    def worker_address(self, target: Target, instance: int) -> tuple[str, int]:
        """(advertised host, web UI port) by which the master's /json lists this instance."""
        entry = next(e for e in target.entries if e.group == "workers")
        port = int(self.inventory.setting(entry, "worker_webui_port")) + instance - 1
        return self.inventory.advertised(entry), port


    # Master's view -------------------------------------------------------------------------

    def master_ui(self, entry: HostEntry) -> str:
        """A master's web UI address (https with TLS)."""
        host = self.inventory.advertised(entry)
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.inventory.uses_tls else "http"
        return f"{scheme}://{host}:{self.inventory.setting(entry, 'webui_port')}"

    def master_json(self, entry: HostEntry) -> dict[str, Any] | None:
        context = None
        if self.inventory.uses_tls:
            if not (self.credentials.directory / "ca.pem").exists():
                return None  # no CA yet, so no master with TLS: status makes none
            context = ssl.create_default_context(cadata=self.credentials.trusted().decode())
        from toolkit.runtime.wire import rest_token  # a UI that needs a login to read takes it

        headers = {}
        # a token only where reading needs one (it is good for every action for a minute),
        # and never made here: status changes nothing
        if self.inventory.setting(entry, "ui_login") == "always" and (
                self.inventory.secret_file.exists()):
            secret = self.inventory.secret_file.read_bytes().split(b"\n")[0].strip()
            headers["Authorization"] = f"Bearer {rest_token(secret, 60)}"
        request = urllib.request.Request(f"{self.master_ui(entry)}/json", headers=headers)
        # straight to the master: an http_proxy of the environment is not on the way
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        try:
            with opener.open(request, timeout=3) as response:
                state: dict[str, Any] = json.load(response)
                return state
        except (OSError, ValueError):
            return None

    def ensemble_mode(self, target: Target) -> str | None:
        """A ZooKeeper server's mode, as it answers ``srvr`` (leader, follower...), or None."""
        from toolkit.runtime.ensemble import mode

        ensemble, entry = self.inventory.ensemble, self.inventory.entry(target.address)
        if ensemble is None or entry is None:
            return None
        return mode(self.inventory.advertised(entry), ensemble.client_port)

    def alive_in_master(self) -> set[tuple[str, int]]:
        """The ALIVE workers in the view of the first master that answers and is ALIVE."""
        state = first_alive([s for s in map(self.master_json, self.inventory.masters) if s]) or {}
        return {(w["host"], int(w["webuiaddress"].rpartition(":")[2] or 0))
                for w in state.get("workers", []) if w["state"] == "ALIVE"}

def host_for(entry: HostEntry, ssh: SSHSettings, port: int | None = None) -> Host:
    """The transport to one inventory host: this machine itself, or SSH."""
    if entry.local:
        return LocalHost(entry.address)
    return SSHHost(entry, ssh, port)


def first_alive(answers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The active master's view: the first ALIVE one, else any that answered."""
    alive = [s for s in answers if s.get("status") == "ALIVE"]
    return (alive or answers)[0] if answers else None
