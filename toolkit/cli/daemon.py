"""`ember daemon ...`: spark-daemon.sh's actions, and the playbook's side of its protocol."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import ConfigError
from toolkit.settings import named, parsed, positive_int, resolve

if TYPE_CHECKING:
    from toolkit.daemon.settings import DaemonSettings


KEY_FILES = ("secret", "ca.pem", "cert.pem", "key.pem")
"""Installed files that running roles reload (SIGHUP) when they change."""


def checked_grep(text: str) -> str:
    from toolkit.daemon.logs import checked_pattern

    try:
        return checked_pattern(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--grep ")) from None


def run_daemon(args: argparse.Namespace) -> int:
    from toolkit.daemon import control
    from toolkit.daemon.settings import hand_over, load_settings
    from toolkit.errors import EmberError

    timeout: float | None = None  # --timeout: a caller's deadline, sooner, never later
    if args.timeout is not None:
        timeout = resolve(named("daemon", "start_timeout"), args.timeout, {})
    installed: list[Path] = []
    if args.files_from_stdin:
        from toolkit.base.files import bundle_paths, install_bundle

        files = sys.stdin.buffer.readline()
        if args.action == "install-systemd" and not _systemd_here(args):
            return 1  # checked before anything is written: the host keeps its files
        install_bundle(files)
        installed = bundle_paths(files)
    settings = load_settings(backend=args.backend, scope=args.systemd_scope)
    # the run user is made where roles start; install-systemd makes it once systemd is
    # known to run here (daemon/systemd.py: install)
    hand_over(settings, installed, create=args.action in ("start", "restart", "run")
              and settings.backend != "systemd", role=args.role)
    if args.action == "supervisor-shutdown":
        return control.supervisor_shutdown(settings)
    if args.action in ("install-systemd", "uninstall-systemd"):
        return _systemd_units(args, settings)
    if args.role is None:
        raise ConfigError(f"daemon {args.action} needs a role: master, worker or zookeeper")
    instances = _instances(args)
    if len(instances) > 1 and args.action not in ("start", "stop", "status", "reload"):
        raise ConfigError(f"daemon {args.action} takes one instance; start, stop, status and "
                          f"reload take several (1,2,3)")
    key_files = [p for p in installed if p.name in KEY_FILES]
    instance, role = instances[0], args.role
    try:
        if args.when_told:
            refused, limit = _wait_until_told(args, settings, instances)
            if refused is not None:
                return refused
            timeout = limit if limit is not None else timeout
        if timeout is not None:
            settings = dataclasses.replace(
                settings, start_timeout=min(settings.start_timeout, timeout))
        if args.action == "start":
            return control.each_instance(role, instances, lambda i, say: control.start(
                settings, role, i, args.role_args, say, if_stopped=args.if_stopped,
                key_files=key_files), args.json)
        if args.action == "reload":
            return control.each_instance(role, instances, lambda i, say: control.reload(
                settings, role, i, say), args.json)
        if args.action == "stop":
            code = control.each_instance(
                role, instances, lambda i, say: control.stop(settings, role, i, say), args.json)
            if args.shutdown_supervisor:
                control.supervisor_shutdown(settings, only_if_idle=True)
            return code
        if args.action == "restart":
            return control.restart(settings, role, instance, args.role_args)
        if args.action == "run":
            return control.run_foreground(settings, role, instance, args.role_args)
        if args.action == "logs" and settings.backend == "systemd" and (
                settings.systemd_output == "journal"):
            from toolkit.daemon.systemd import show_journal

            return show_journal(settings, role, instance, args.lines, args.grep, args.follow,
                                lambda line: print(line, flush=True))
        if args.action == "logs":
            from toolkit.daemon.logs import show

            return show(settings.log_file(role, instance), args.lines, args.grep,
                        args.follow, lambda line: print(line, flush=True))
        return max(control.status(settings, role, i, as_json=args.json) for i in instances)
    except ConfigError:
        raise
    except EmberError as exc:
        print(f"ember daemon {args.action}: {exc}", file=sys.stderr)
        return 1


def _instances(args: argparse.Namespace) -> list[int]:
    return [parsed("INSTANCE", part, positive_int) for part in args.instance.split(",")]


def _systemd_here(args: argparse.Namespace) -> bool:
    """Whether systemd of the asked scope runs here; if not, say so."""
    from toolkit.daemon import systemd
    from toolkit.daemon.settings import load_settings
    from toolkit.errors import EmberError

    try:
        systemd.require_systemd(load_settings(backend=args.backend, scope=args.systemd_scope))
    except EmberError as exc:
        print(f"ember daemon {args.action}: {exc}", file=sys.stderr)
        return False
    return True


def _systemd_units(args: argparse.Namespace, settings: DaemonSettings) -> int:
    """install-systemd: units for this host's backend, enabling the named role instances
    (under supervisor: ember-supervisord.service); uninstall-systemd: all of Ember's."""
    from toolkit.daemon import systemd
    from toolkit.errors import EmberError

    try:
        if args.action == "uninstall-systemd":
            return systemd.uninstall(settings)
        enable = []
        if args.role is not None and settings.backend == "supervisor":
            enable = [systemd.SUPERVISORD_UNIT]
        elif args.role is not None:
            enable = [settings.unit(args.role, i) for i in _instances(args)]
        return systemd.install(settings, enable, args.now)
    except EmberError as exc:
        print(f"ember daemon {args.action}: {exc}", file=sys.stderr)
        return 1


def _wait_until_told(args: argparse.Namespace, settings: DaemonSettings,
                     instances: list[int]) -> tuple[int | None, float | None]:
    """--when-told: get ready, then read one line. `go [SECONDS]` carries on (None, with the
    time a start may take). Otherwise nothing is done and exit is 1: `skip REASON` says
    REASON; end of input means the caller is gone."""
    from toolkit.daemon import control
    from toolkit.daemon.protocol import read_order

    if args.action == "start":
        control.prepare(settings)
    order = read_order(sys.stdin.readline())
    if order.go:
        return None, order.seconds
    done = "started" if args.action == "start" else "stopped"
    reason = order.reason

    def refuse(instance: int, say: Callable[[str], None]) -> int:
        say(f"{args.role} {instance} not {done}: {reason}")
        return 1

    return control.each_instance(args.role, instances, refuse, args.json), None
