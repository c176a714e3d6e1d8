"""start-all, stop-all and their parts: the ZooKeeper ensemble (when the inventory has one)
first, then masters, then workers; stop-all the other way round. `--wait` bounds the whole
run, and a worker not ALIVE in time is stopped, not left retrying on its own."""

from __future__ import annotations

import time

from toolkit.daemon.protocol import Order
from toolkit.ops.cluster import Cluster, Target
from toolkit.ops.group import Outcome


def start_ensemble(cluster: Cluster, wait: float = 60.0) -> list[Outcome]:
    """Every server of the inventory's ZooKeeper ensemble, all at once even with --serial: a
    server is ready only once a majority of them runs."""
    secret = cluster.secret()
    return cluster.each(cluster.with_role("zookeeper"), lambda t: cluster.do(
        t, "start", "zookeeper", "--if-stopped", "--timeout", f"{wait:.1f}", secret=secret),
        parallel=True)


def stop_ensemble(cluster: Cluster) -> list[Outcome]:
    return cluster.each(cluster.with_role("zookeeper"), lambda t: cluster.do(
        t, "stop", "zookeeper", "--shutdown-supervisor"), parallel=True)


def start_masters(cluster: Cluster, wait: float = 60.0) -> list[Outcome]:
    """Every master, each waited for until ready (up to ``wait`` seconds)."""
    secret = cluster.secret()
    return cluster.each(cluster.with_role("master"), lambda t: cluster.do(
        t, "start", "master", "--if-stopped", "--timeout", f"{wait:.1f}", secret=secret))


def start_workers(cluster: Cluster, wait: float = 60.0) -> list[Outcome]:
    """Every worker instance, in parallel; then until each is ALIVE in the master's view."""
    deadline = time.monotonic() + wait
    secret = cluster.secret()
    started = cluster.each(cluster.with_role("worker"), lambda t: cluster.do(
        t, "start", "worker", "--if-stopped", "--timeout", f"{_left(deadline):.1f}",
        secret=secret))
    return _until_alive(cluster, started, deadline)


def start_all(cluster: Cluster, wait: float = 60.0) -> list[Outcome]:
    """Masters first, workers once a master is ready. Meanwhile every worker host gets
    ready: connected, files installed, supervisord started; its workers wait for `go`."""
    deadline = time.monotonic() + wait  # --wait bounds the whole run
    ensemble = start_ensemble(cluster, wait)
    if cluster.serial:
        outcomes = ensemble + start_masters(cluster, _left(deadline))
        return outcomes + start_workers(cluster, _left(deadline))
    workers = cluster.gated(cluster.with_role("worker"), "start", "worker", "--if-stopped",
                            secret=cluster.secret())
    outcomes = ensemble + start_masters(cluster, _left(deadline))
    masters = [o for o in outcomes if o.role == "master"]
    if masters and not any(o.ok for o in masters):
        return outcomes + workers(Order(False, reason="no master is up").line())
    return _until_alive(cluster, outcomes + workers(Order(True, _left(deadline)).line()),
                        deadline)


def stop_workers(cluster: Cluster) -> list[Outcome]:
    return cluster.each(cluster.with_role("worker"), lambda t: cluster.do(t, "stop", "worker"))


def stop_masters(cluster: Cluster) -> list[Outcome]:
    return cluster.each(cluster.with_role("master"), lambda t: cluster.do(t, "stop", "master"))


def stop_all(cluster: Cluster) -> list[Outcome]:
    """Workers, then masters, then the ensemble; each host's supervisord goes with its last
    role (a supervisord that still runs a role stays). The masters' commands are opened at
    once and told to go when the workers are done."""
    masters = cluster.with_role("master")
    shutdown = ["--shutdown-supervisor"]

    def stop_host_workers(target: Target) -> list[Outcome]:
        last = target not in masters
        return cluster.do(target, "stop", "worker", *(shutdown * last))

    if cluster.serial:
        return cluster.each(cluster.with_role("worker"), stop_host_workers) + cluster.each(
            masters, lambda t: cluster.do(t, "stop", "master", *shutdown)) + stop_ensemble(
            cluster)
    then_masters = cluster.gated(masters, "stop", "master", *shutdown)
    workers = cluster.each(cluster.with_role("worker"), stop_host_workers)
    return workers + then_masters(Order(True).line()) + stop_ensemble(cluster)


def restart_all(cluster: Cluster, wait: float = 60.0) -> list[Outcome]:
    """stop-all, then start-all bounded by ``wait``: every outcome of both counts."""
    return stop_all(cluster) + start_all(cluster, wait)


def _until_alive(cluster: Cluster, outcomes: list[Outcome], deadline: float) -> list[Outcome]:
    """Wait until every worker started is ALIVE in the master's view, up to the deadline;
    late ones fail and are stopped."""
    expected = {cluster.worker_address(cluster.targets[o.host], o.instance)
                for o in outcomes if o.ok and o.role == "worker"}
    if expected:
        late = wait_alive(cluster, expected, deadline)
        late_keys = {(o.host, o.instance) for o in late}
        outcomes = [o for o in outcomes if (o.host, o.instance) not in late_keys] + late
    return outcomes


def wait_alive(cluster: Cluster, expected: set[tuple[str, int]], deadline: float
               ) -> list[Outcome]:
    """Wait until each expected worker instance is ALIVE in the master's /json, up to the
    deadline. Late ones fail and are stopped: none is left retrying on its own."""
    shown = -1
    while True:
        missing = expected - cluster.alive_in_master()
        alive = len(expected) - len(missing)
        if alive != shown:
            cluster.events.note(f"waiting for workers: {alive} of {len(expected)} ALIVE in the "
                                f"master's view")
            shown = alive
        if not missing:
            return []
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    late = {t.address: [i for r, i in t.roles
                        if r == "worker" and cluster.worker_address(t, i) in missing]
            for t in cluster.with_role("worker")}

    def stop_late(target: Target) -> list[Outcome]:
        instances = late[target.address]
        result = cluster.daemon(target, "stop", "worker", ",".join(map(str, instances)),
                                timeout=stop_bound(cluster, target))
        what = "stopped" if result.ok else (
            f"could not be stopped (exit {result.exited}): run `ember daemon stop worker "
            f"{','.join(map(str, instances))}` on {target.address}\n{result.tail(3)}")
        return [Outcome(target.address, "worker", i, False,
                        f"not ALIVE in the master's view within --wait: {what}")
                for i in instances]

    return cluster.each([t for t in cluster.with_role("worker") if late[t.address]], stop_late)


def stop_bound(cluster: Cluster, target: Target) -> float:
    """How long a stop may take on this host: its stop timeout, SIGKILL, a margin."""
    return float(cluster.inventory.setting(target.entries[0], "stop_timeout")) + 30


def _left(deadline: float) -> float:
    """Seconds to a deadline; at least one, so a late step still gets a fair try."""
    return max(1.0, deadline - time.monotonic())
