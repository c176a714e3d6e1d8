"""Fabric tasks. Each is a few lines: parse options, call toolkit.ops, print, exit code.

Common options: --inventory FILE (default $EMBER_INVENTORY, else inventory/local.yml),
--hosts h1,h2 and --roles master,worker to limit, --serial for one host after another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from toolkit import inventory as inventory_module
from toolkit.errors import EmberError
from toolkit.ops import lifecycle, units
from toolkit.ops.cluster import Cluster
from toolkit.ops.group import Outcome
from toolkit.ops.logs import logs as show_logs
from toolkit.ops.preview import render_all
from toolkit.ops.show import Printer, format_status, summary
from toolkit.ops.status import status as status_rows

HOSTS = {
    "inventory": "inventory file: YAML or a Spark-style workers file "
                 "(default: $EMBER_INVENTORY, else inventory/local.yml)",
    "hosts": "only these hosts, comma-separated",
    "serial": "one host after another instead of all at once (like SPARK_SSH_FOREGROUND)",
}
OUT = Printer()  # everything a task prints goes through it, whole lines from any thread
COMMON = {**HOSTS, "roles": "only these roles, comma-separated: master, worker"}


@contextmanager
def cluster(inventory: str | None, hosts: str | None = None, roles: str | None = None,
            serial: bool = False) -> Iterator[Cluster]:
    try:
        bound = Cluster(inventory_module.load(inventory), _split(hosts), _split(roles), serial,
                        events=OUT)
    except EmberError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    try:
        yield bound
    finally:
        bound.close()


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _finish(name: str, outcomes: list[Outcome]) -> None:
    code, line = summary(name, outcomes)
    OUT.note(line)
    if code:
        raise Exit(code=code)


def _wait(value: float) -> float:
    """``--wait``, checked here: a start given no time at all would fail on every host."""
    if not value > 0:
        raise Exit(f"error: --wait must be more than 0 seconds, not {value:g}", code=2)
    return float(value)


def _run(name: str, inventory: str | None, hosts: str | None, roles: str | None, serial: bool,
         operation: Callable[[Cluster], list[Outcome]]) -> None:
    with cluster(inventory, hosts, roles, serial) as bound:
        try:
            outcomes = operation(bound)
        except EmberError as exc:
            raise Exit(f"{name}: {exc}", code=1) from None
    _finish(name, outcomes)


@task(help={**COMMON, "wait": "seconds to wait for every worker to be ALIVE (default 60)"})
def start_all(c: Any, inventory: str | None = None, hosts: str | None = None,
              roles: str | None = None, serial: bool = False, wait: float = 60) -> None:
    """Start the masters, then all workers in parallel; wait until every worker is ALIVE."""
    bound = _wait(wait)
    _run("start-all", inventory, hosts, roles, serial, lambda cl: lifecycle.start_all(cl, bound))


@task(help={**COMMON, "wait": "accepted for stop-all.sh compatibility; stop always waits "
                              "(bounded by each host's stop timeout)"})
def stop_all(c: Any, inventory: str | None = None, hosts: str | None = None,
             roles: str | None = None, serial: bool = False, wait: bool = False) -> None:
    """Stop workers, then masters, then each host's supervisord: nothing is left running."""
    _run("stop-all", inventory, hosts, roles, serial, lambda cl: lifecycle.stop_all(cl))


@task(help={**COMMON, "wait": "seconds to wait for every worker to be ALIVE (default 60)"})
def restart_all(c: Any, inventory: str | None = None, hosts: str | None = None,
                roles: str | None = None, serial: bool = False, wait: float = 60) -> None:
    """stop-all, then start-all; every outcome of both counts."""
    bound = _wait(wait)
    _run("restart-all", inventory, hosts, roles, serial,
         lambda cl: lifecycle.restart_all(cl, bound))


@task(help=HOSTS)
def start_master(c: Any, inventory: str | None = None, hosts: str | None = None,
                 serial: bool = False) -> None:
    """Start the master(s) and wait until each is ready."""
    _run("start-master", inventory, hosts, "master", serial, lambda cl: lifecycle.start_masters(cl))


@task(help={"inventory": HOSTS["inventory"],
            "wait": "seconds to wait for another master to lead (default 60)"})
def failover(c: Any, inventory: str | None = None, wait: float = 60) -> None:
    """The drill: stop the leading master, wait until another leads with every worker and
    application back (and say how long it took), then start the old one again as a standby."""
    from toolkit.ops.failover import failover as drill

    bound = _wait(wait)
    _run("failover", inventory, None, None, False, lambda cl: drill(cl, bound))


@task(help={"inventory": HOSTS["inventory"]})
def rotate_credentials(c: Any, inventory: str | None = None) -> None:
    """Replace the cluster secret and CA (and every host's certificate) with nothing stopped:
    three rounds of install-and-reload on every host (accept, prove, retire)."""
    from toolkit.ops.rotation import rotate

    _run("rotate-credentials", inventory, None, None, False, rotate)


@task(help=HOSTS)
def stop_master(c: Any, inventory: str | None = None, hosts: str | None = None,
                serial: bool = False) -> None:
    """Stop the master(s)."""
    _run("stop-master", inventory, hosts, "master", serial, lambda cl: lifecycle.stop_masters(cl))


@task(help={**HOSTS, "wait": "seconds to wait for every worker to be ALIVE (default 60)"})
def start_workers(c: Any, inventory: str | None = None, hosts: str | None = None,
                  serial: bool = False, wait: float = 60) -> None:
    """Start every worker instance, in parallel; wait until each is ALIVE in the master."""
    bound = _wait(wait)
    _run("start-workers", inventory, hosts, "worker", serial,
         lambda cl: lifecycle.start_workers(cl, bound))


@task(help=HOSTS)
def stop_workers(c: Any, inventory: str | None = None, hosts: str | None = None,
                 serial: bool = False) -> None:
    """Stop every worker instance."""
    _run("stop-workers", inventory, hosts, "worker", serial, lambda cl: lifecycle.stop_workers(cl))


@task(help={**COMMON, "json": "print JSON rows instead of a table"})
def status(c: Any, inventory: str | None = None, hosts: str | None = None,
           roles: str | None = None, serial: bool = False, json_: bool = False) -> None:
    """A table: host, role, instance, daemon state, pid, uptime, and the master's view.

    Exits 1 if anything is not running or not ALIVE in the master's view.
    """
    with cluster(inventory, hosts, roles, serial) as bound:
        rows = status_rows(bound)
    OUT.note(json.dumps(rows, indent=2) if json_ else format_status(rows))
    if not all(row["ok"] for row in rows):
        raise Exit(code=1)


@task(help={"inventory": HOSTS["inventory"], "hosts": HOSTS["hosts"],
            "host": "only this host (same as --hosts with one host)",
            "n": "lines per log (default 20)", "follow": "keep streaming new lines",
            "grep": "only lines matching this regular expression",
            "role": "only this role: master or worker"})
def logs(c: Any, inventory: str | None = None, hosts: str | None = None,
         host: str | None = None, role: str | None = None, n: int = 20, follow: bool = False,
         grep: str | None = None) -> None:
    """Each host's daemon logs, lines prefixed with the host (like workers.sh)."""
    with cluster(inventory, host or hosts, role) as bound:
        try:
            failed = show_logs(bound, n, follow, grep)
        except EmberError as exc:  # a bad --grep, named before any host is asked
            raise Exit(f"error: {exc}", code=2) from None
    if failed:
        raise Exit(code=1)


@task(help={"inventory": COMMON["inventory"], "out": "directory to write into (default rendered/)"})
def render(c: Any, inventory: str | None = None, out: str = "rendered") -> None:
    """Write what every host would get (ember-env.sh, the commands to run) for review."""
    with cluster(inventory) as bound:
        for path in render_all(bound, Path(out)):
            OUT.note(str(path))


@task(help={**HOSTS, "python": "the interpreter that creates each host's venv "
                                "(default: python3 on the host)"})
def deploy(c: Any, inventory: str | None = None, hosts: str | None = None,
           serial: bool = False, python: str = "python3") -> None:
    """Install exactly lock/runtime.txt and the toolkit in a venv on every host, offline."""
    from toolkit.ops import provision  # only here: it imports the lock's parser

    _run("deploy", inventory, hosts, None, serial, lambda cl: provision.deploy(cl, python))


@task(help=HOSTS)
def doctor(c: Any, inventory: str | None = None, hosts: str | None = None,
           serial: bool = False) -> None:
    """Preflight per host: SSH and host key, python, toolkit and locked packages, ports, dirs."""
    from toolkit.ops import provision

    _run("doctor", inventory, hosts, None, serial, lambda cl: provision.doctor(cl))


SCOPE = "systemd's system manager (/etc/systemd/system) or the SSH user's own (~/.config/" \
        "systemd/user); default: the inventory's systemd_scope, else system"


@task(help={**HOSTS, "scope": SCOPE, "now": "also start the units (as systemctl enable --now)"})
def install_systemd(c: Any, inventory: str | None = None, hosts: str | None = None,
                    serial: bool = False, scope: str | None = None, now: bool = False) -> None:
    """Install systemd units on every host, daemon-reload and enable them (--now starts them).

    With the supervisor backend: ember-supervisord.service. With the systemd backend:
    ember-master.service and ember-worker@N.service for each worker instance.
    """
    _run("install-systemd", inventory, hosts, None, serial,
         lambda cl: units.install_systemd(cl, _scope(scope), now))


@task(help={**HOSTS, "scope": SCOPE})
def uninstall_systemd(c: Any, inventory: str | None = None, hosts: str | None = None,
                      serial: bool = False, scope: str | None = None) -> None:
    """Stop, disable and remove Ember's systemd units on every host; daemon-reload."""
    _run("uninstall-systemd", inventory, hosts, None, serial,
         lambda cl: units.uninstall_systemd(cl, _scope(scope)))


def _scope(value: str | None) -> str | None:
    if value not in (None, "system", "user"):
        raise Exit(f"error: --scope must be system or user, not {value!r}", code=2)
    return value


ns = Collection(start_all, stop_all, restart_all, failover, start_master, stop_master,
                start_workers, stop_workers, status, logs, render, deploy, doctor,
                install_systemd, uninstall_systemd, rotate_credentials)
