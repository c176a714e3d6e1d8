"""`fab status`: one row per role instance, the daemon's state on its host beside the master's
view of it. Every host gets its rows, whatever fails."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from toolkit.daemon.settings import ROLES
from toolkit.errors import EmberError
from toolkit.ops.cluster import Cluster, Target, first_alive
from toolkit.ops.group import Outcome
from toolkit.ops.transport import HostError
from toolkit.runtime.ensemble import SERVING


def status(cluster: Cluster) -> list[dict[str, Any]]:
    """One row per role instance: daemon state and the master's view of it."""
    with ThreadPoolExecutor(max_workers=4) as side:  # the masters' views, while SSH works
        views = {e.address: side.submit(cluster.master_json, e)
                 for e in cluster.inventory.masters}
        cluster.connect_all()
        by_master = {address: view.result() for address, view in views.items()}
    state = first_alive([s for s in by_master.values() if s])
    workers = {}
    for worker in (state or {}).get("workers", []):
        port = int(worker["webuiaddress"].rpartition(":")[2] or 0)
        workers[(worker["host"], port)] = worker

    def view(target: Target, role: str, instance: int) -> dict[str, Any]:
        """The master's view of one instance (a ZooKeeper server's own: its mode); needs no
        SSH to the instance's host."""
        if role == "zookeeper":
            said = cluster.ensemble_mode(target)
            return {"master_view": (said or "no answer").upper(), "cores": None,
                    "memory": None}
        if role == "master":
            entry = next(e for e in target.entries if e.group == "masters")
            own = by_master.get(entry.address)
            return {"master_view": own["status"] if own else "missing",
                    "cores": None, "memory": None, "ui": cluster.master_ui(entry)}
        seen = workers.get(cluster.worker_address(target, instance))
        if seen is None:
            return {"master_view": "missing", "cores": None, "memory": None}
        return {"master_view": seen["state"],
                "cores": f"{seen['coresused']}/{seen['cores']}",
                "memory": f"{seen['memoryused']}/{seen['memory']}m"}

    recovers = cluster.inventory.recovery.get("mode", "none") != "none"

    def rows_for(target: Target) -> list[Outcome]:
        outcomes = []
        infos: dict[tuple[str, int], dict[str, Any]] = {}
        for role in ROLES:
            instances = [i for r, i in target.roles if r == role]
            if not instances:
                continue
            try:
                found = cluster.statuses(target, role, instances)
            except (EmberError, OSError) as exc:
                # a host we cannot reach, or whose answer is late or garbled: say which
                state = "unreachable" if isinstance(exc, (HostError, OSError)) else "unknown"
                found = {i: _unknown(state, str(exc)) for i in instances}
            infos.update({(role, i): info for i, info in found.items()})
        for role, instance in target.roles:
            info = infos.get((role, instance)) or _unknown(
                "unknown", f"ember daemon status said nothing of {role} {instance}")
            row = {"host": target.address, "role": role, "instance": instance,
                   "daemon": info["state"], "pid": info["pid"], "uptime": info["uptime"],
                   **view(target, role, instance)}
            if info.get("detail"):
                row["detail"] = info["detail"]
            if "error" in info:
                row["error"] = info["error"]
            # a standby is as it should be when the masters recover: it waits to lead
            healthy = ({"ALIVE", "STANDBY"} if role == "master" and recovers else
                       {m.upper() for m in SERVING} if role == "zookeeper" else {"ALIVE"})
            ok = info["state"] == "running" and row["master_view"] in healthy
            outcomes.append(Outcome(target.address, role, instance, ok, "", row))
        return outcomes

    outcomes = cluster.each(list(cluster.targets.values()), rows_for, quiet=True)
    rows = []
    for outcome in outcomes:
        # a host whose rows could not be built at all still gets one, with the reason
        row = dict(outcome.data) or {
            "host": outcome.host, "role": outcome.role, "instance": outcome.instance,
            "daemon": "unknown", "pid": None, "uptime": None, "master_view": "missing",
            "cores": None, "memory": None, "error": outcome.message}
        row["ok"] = outcome.ok
        rows.append(row)
    return rows


def _unknown(state: str, reason: str) -> dict[str, Any]:
    return {"state": state, "pid": None, "uptime": None, "code": None, "error": reason}
