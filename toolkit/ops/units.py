"""`fab install-systemd` / `uninstall-systemd`: each host's units, written by the host's own
`ember daemon`, which checks for systemd before it writes anything."""

from __future__ import annotations

from toolkit.ops.cluster import Cluster, Target
from toolkit.ops.group import Outcome


def install_systemd(cluster: Cluster, scope: str | None = None, now: bool = False
                    ) -> list[Outcome]:
    """Render and install each host's units, daemon-reload, enable (and start, with
    ``now``): the ensemble's hosts first (at once: a server is ready only with a majority),
    master hosts next, as start-all does, then worker hosts in parallel."""
    secret = cluster.secret()

    def install(target: Target, role: str) -> list[Outcome]:
        # the scope travels as a flag: the host checks for systemd before it writes a file
        chosen = scope or str(cluster.inventory.setting(target.entries[0], "systemd_scope")
                              or "system")
        result = cluster.begin(target, "install-systemd", role, "--scope", chosen,
                               *(["--now"] if now else []),
                               files=cluster.files(target, secret)).finish(timeout=180)
        lines = (result.stdout + result.stderr).strip().splitlines()
        return [Outcome(target.address, role, 0, result.ok, (
            lines[-1] if lines else "done") if result.ok else
            f"failed (exit {result.exited})\n{result.tail(12)}")]

    return (cluster.each(cluster.with_role("zookeeper"), lambda t: install(t, "zookeeper"),
                         parallel=True) +
            cluster.each(cluster.with_role("master"), lambda t: install(t, "master")) +
            cluster.each(cluster.with_role("worker"), lambda t: install(t, "worker")))


def uninstall_systemd(cluster: Cluster, scope: str | None = None) -> list[Outcome]:
    """Stop, disable and remove every Ember unit on every host; daemon-reload."""
    def uninstall(target: Target) -> list[Outcome]:
        result = cluster.daemon(target, "uninstall-systemd",
                                *(["--scope", scope] if scope else []), timeout=180)
        return [Outcome(target.address, "units", 0, result.ok,
                        result.tail(1) if result.ok else
                        f"failed (exit {result.exited})\n{result.tail(12)}")]
    return cluster.each(list(cluster.targets.values()), uninstall, label="units")
