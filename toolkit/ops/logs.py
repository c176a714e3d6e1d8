"""`fab logs`: every role instance's log, lines prefixed with host and role (like workers.sh);
with ``follow``, streamed from every host at once."""

from __future__ import annotations

import threading

from toolkit.daemon.logs import checked_pattern
from toolkit.ops.cluster import Cluster, Target
from toolkit.ops.group import Outcome


def logs(cluster: Cluster, lines: int, follow: bool, grep: str | None) -> bool:
    """Print every role instance's log, host-prefixed; True if any could not be read. A bad
    ``grep`` pattern is a ConfigError before any host is asked."""
    if grep is not None:
        checked_pattern(grep)
    extra = ["-n", str(lines)] + ([f"--grep={grep}"] if grep else [])  # even if it starts -
    stop = threading.Event()
    failed = threading.Event()

    def show(target: Target) -> list[Outcome]:
        for role, instance in target.roles:
            prefix = f"{target.address}: {role} {instance}: "
            argv = cluster.daemon_argv(target, "logs", role, str(instance), *extra)
            if follow:
                target.host.connect()  # an unreachable host fails here, per host
                threading.Thread(target=_follow, daemon=True, args=(
                    cluster, target, [*argv, "--follow"], prefix, stop, failed)).start()
                continue
            result = cluster.daemon(target, "logs", role, str(instance), *extra)
            if not result.ok:
                failed.set()
            for text in (result.stdout + result.stderr).splitlines():
                cluster.events.note(prefix + text)
        return []

    if any(not o.ok for o in cluster.each(list(cluster.targets.values()), show, label="logs")):
        failed.set()
    if follow:
        try:
            stop.wait()
        except KeyboardInterrupt:
            stop.set()
    return failed.is_set()


def _follow(cluster: Cluster, target: Target, argv: list[str], prefix: str,
            stop: threading.Event, failed: threading.Event) -> None:
    try:
        code = target.host.stream(argv, lambda text: cluster.events.note(prefix + text), stop,
                                  env={"EMBER_CONF_DIR": f"{target.home}/conf"})
        if code != 0 and not stop.is_set():
            failed.set()
            cluster.events.note(f"{prefix}stopped following: exit {code}")
    except Exception as exc:
        failed.set()
        cluster.events.note(f"{prefix}cannot follow: {exc}")
