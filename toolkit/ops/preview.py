"""`fab render`: what every host would get, written here for review; no host is touched."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from toolkit.ops.cluster import Cluster, Target


def render_all(cluster: Cluster, out: Path) -> list[Path]:
    """Write what every host would get, for review, without touching any host: ember-env.sh,
    the commands, and what `ember daemon` renders there from the same settings (supervisor
    files, systemd units). Names that hold the host's hostname use its inventory address."""
    written = []
    for target in cluster.targets.values():
        folder = out / target.address
        files = {"ember-env.sh": cluster.env_file(target)}
        env = f"EMBER_CONF_DIR={shlex.quote(target.home + '/conf')}"
        files["commands.txt"] = "\n".join(
            f"{env} {shlex.join(cluster.daemon_argv(target, 'start', r, str(i)))}"
            for r, i in target.roles) + "\n"
        files.update(_daemon_files(cluster, target))
        for name, text in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def _daemon_files(cluster: Cluster, target: Target) -> dict[str, str]:
    """The supervisor files and systemd units the host would render, by relative path."""
    import getpass

    from toolkit.daemon.control import instance_env, runtime_command
    from toolkit.daemon.settings import load_settings, run_as
    from toolkit.daemon.supervisor import SupervisorBackend
    from toolkit.daemon.systemd import unit_texts

    entry = target.entries[0]
    user = getpass.getuser() if entry.local else (
        entry.address.rpartition("@")[0] or cluster.inventory.ssh.user or getpass.getuser())
    settings = dataclasses.replace(
        load_settings({**cluster.host_env(target), "USER": user}), hostname=target.address)
    files = {}
    if settings.backend in ("supervisor", "systemd"):
        files.update({f"systemd/{name}": text
                      for name, text in unit_texts(settings, target.python).items()})
    if settings.backend == "supervisor":
        backend = SupervisorBackend(settings)
        files["supervisor/supervisord.conf"] = backend.config_text(  # as ensure_running does
            (run_as(settings.run_user) or "root") if user == "root" else None)
        for role, instance in target.roles:
            command = runtime_command(settings, role, instance, [], python=target.python)
            files[f"supervisor/programs/{settings.name(role, instance)}.conf"] = (
                backend.program_text(role, instance, command,
                                     instance_env(settings, role, instance),
                                     settings.log_file(role, instance)))
    return files
