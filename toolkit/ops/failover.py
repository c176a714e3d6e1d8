"""`fab failover`: the drill of an operator who wants to know that a standby takes over.

Stop the leading master; wait until another master leads with every worker and every
application back; start the old leader again (it stands by). Each step is an outcome, and the
takeover says how long it took.
"""

from __future__ import annotations

import time
from typing import Any

from toolkit.errors import EmberError
from toolkit.ops.cluster import Cluster
from toolkit.ops.group import Outcome

POLL = 0.1


def failover(cluster: Cluster, wait: float = 60.0) -> list[Outcome]:
    inventory = cluster.inventory
    if len(inventory.masters) < 2 or inventory.recovery.get("mode", "none") == "none":
        raise EmberError(f"{inventory.path}: a failover needs two masters or more and a "
                         f"recovery section (mode: filesystem)")
    views = {e.address: cluster.master_json(e) for e in inventory.masters}
    leaders = [a for a, v in views.items() if v and v.get("status") == "ALIVE"]
    if len(leaders) != 1:
        raise EmberError("no master leads now: start the cluster first (fab status)"
                         if not leaders else f"several masters say they lead: {leaders}")
    leader = leaders[0]
    before = views[leader] or {}
    workers = int(before.get("aliveworkers", 0))
    apps = {a["id"] for a in before.get("activeapps", [])}
    target = cluster.targets[leader.rpartition("@")[2]]  # targets go by host, not user@host
    cluster.events.note(f"failover: stopping the leader {leader} ({workers} workers, "
                        f"{len(apps)} applications)")
    began = time.monotonic()
    outcomes = cluster.each([target], lambda t: cluster.do(t, "stop", "master"))
    others = [e for e in inventory.masters if e.address != leader]
    new, took = None, 0.0
    while time.monotonic() - began < wait:
        for entry in others:
            if _took_over(cluster.master_json(entry), workers, apps):
                new, took = entry.address, time.monotonic() - began
                break
        if new is not None:
            break
        time.sleep(POLL)
    if new is None:
        taken = Outcome(leader, "failover", 0, False,
                        f"no other master led with {workers} workers and {len(apps)} "
                        f"applications back within {wait:g} s")
    else:
        taken = Outcome(new, "failover", 0, True, f"leads after {took:.2f} s, with {workers} "
                                                   f"workers and {len(apps)} applications back")
    cluster.events.outcome(taken)
    outcomes.append(taken)
    secret = cluster.secret()
    outcomes += cluster.each([target], lambda t: cluster.do(
        t, "start", "master", "--if-stopped", "--timeout", f"{wait:.1f}", secret=secret))
    return outcomes


def _took_over(view: dict[str, Any] | None, workers: int, apps: set[str]) -> bool:
    if not view or view.get("status") != "ALIVE" or int(view.get("aliveworkers", 0)) < workers:
        return False
    back = {a["id"] for a in view.get("activeapps", []) if a.get("state") == "RUNNING"}
    return apps <= back
