"""`fab logs`: every role instance's log, lines prefixed with host and role (like workers.sh);
with ``follow``, streamed from every host at once."""

from __future__ import annotations

import shlex
import threading

from toolkit.ops.cluster import Cluster, Outcome, Target


def logs(cluster: Cluster, lines: int, follow: bool, grep: str | None) -> bool:
    """Print every role instance's log, host-prefixed; True if any could not be read."""
    extra = ["-n", str(lines)] + (["--grep", grep] if grep else [])
    stop = threading.Event()
    failed = threading.Event()

    def show(target: Target) -> list[Outcome]:
        for role, instance in target.roles:
            prefix = f"{target.address}: {role} {instance}: "
            argv = cluster.daemon_argv(target, "logs", role, str(instance), *extra)
            if follow:
                env = f"EMBER_CONF_DIR={shlex.quote(target.home + '/conf')}"
                line = ["sh", "-c", f"{env} exec {shlex.join([*argv, '--follow'])}"]
                target.host.connect()  # an unreachable host fails here, per host
                threading.Thread(target=_follow, daemon=True, args=(
                    cluster, target, line, prefix, stop, failed)).start()
                continue
            result = cluster.daemon(target, "logs", role, str(instance), *extra)
            if not result.ok:
                failed.set()
            for text in (result.stdout + result.stderr).splitlines():
                cluster.emit(prefix + text)
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
        code = target.host.stream(argv, lambda text: cluster.emit(prefix + text), stop)
        if code != 0 and not stop.is_set():
            failed.set()
            cluster.emit(f"{prefix}stopped following: exit {code}")
    except Exception as exc:
        failed.set()
        cluster.emit(f"{prefix}cannot follow: {exc}")
