"""`ember` subcommands. Thin: parse, resolve defaults (flag, EMBER_*, built-in), call the library.

Heavy imports happen inside the subcommand that needs them, so `ember --help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import __version__
from toolkit import settings as settings_registry
from toolkit.base import printable
from toolkit.cli import daemon as daemon_cli
from toolkit.errors import ConfigError

if TYPE_CHECKING:
    from toolkit.runtime import messages as m
    from toolkit.runtime.keys import Keys

LOG_FORMAT = "%(asctime)s %(levelname)s %(module)s: %(message)s"


def _secret_path(args: argparse.Namespace) -> Path | None:
    path: Path | None = settings_registry.resolve(
        settings_registry.named("common", "secret_file"), args.secret_file, os.environ)
    return path


def _secret(args: argparse.Namespace) -> bytes | None:
    from toolkit.runtime.config import read_secret_file

    path = _secret_path(args)
    return read_secret_file(path) if path else None


def _keys(args: argparse.Namespace) -> Keys:
    """The secrets and TLS files the flags and environment name."""
    from toolkit.runtime.config import load_keys

    tls_dir = settings_registry.resolve(settings_registry.named("common", "tls_dir"),
                                        getattr(args, "tls_dir", None), os.environ)
    keys = load_keys(_secret_path(args), tls_dir)
    if keys.secret is None and os.environ.get("EMBER_CREDENTIAL_FILE"):
        from toolkit.runtime.keys import read_credential_file  # a job's, for its own work

        keys = dataclasses.replace(read_credential_file(os.environ["EMBER_CREDENTIAL_FILE"]),
                                   tls=keys.tls)
    elif keys.secret is None:
        from toolkit.runtime.keys import user_secret_file

        keys = dataclasses.replace(keys, fallback=user_secret_file())
    return keys


def _ui_login(args: argparse.Namespace) -> str:
    value: str = settings_registry.resolve(settings_registry.named("common", "ui_login"),
                                           getattr(args, "ui_login", None), os.environ)
    return value


def _role_keys(args: argparse.Namespace, role: str, host: str, say: bool = False) -> Keys:
    """A role's keys. Given no secret and bound to loopback, a role uses this user's own
    secret (made on first use), so that other users of the machine cannot use it; only
    --insecure leaves it open."""
    from toolkit.runtime.config import is_loopback, load_keys
    from toolkit.runtime.keys import make_user_secret, user_secret_file

    tls_dir = settings_registry.resolve(settings_registry.named("common", "tls_dir"),
                                        args.tls_dir, os.environ)
    keys = load_keys(_secret_path(args), tls_dir)
    if keys.secret is None and not args.insecure and is_loopback(host):
        path = user_secret_file()
        secret, made = make_user_secret(path)
        keys = dataclasses.replace(keys, secrets=(secret,))
        if say:
            logging.getLogger("toolkit.cli").info(
                "No cluster secret given: %s this user's own, %s (clients of this user find "
                "it; --insecure leaves the port open instead)", "made" if made else "using",
                path)
    return keys


def _common(parser: argparse.ArgumentParser) -> None:
    _role_flags(parser, "common")
    parser.add_argument("--pid-file", metavar="FILE", type=Path,
                        help="write this process's pid here; removed at clean exit")
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening beyond loopback without a cluster secret or TLS")


def _role_flags(parser: argparse.ArgumentParser, role: str) -> None:
    """The role's flags, as toolkit/settings declares them."""
    for setting in settings_registry.of_role(role):
        _flag(parser, setting)


def _flag(parser: argparse.ArgumentParser, setting: settings_registry.Setting,
          help: str | None = None) -> None:
    """A registry setting's flag, its value left as text for ``resolve``."""
    shown = setting.shown.strip("`")
    default = f"${setting.env}, else {shown}" if setting.env else shown
    parser.add_argument(setting.flag, dest=setting.name, metavar=setting.metavar,
                        help=f"{help or setting.help} (default: {default})")


def _role_values(args: argparse.Namespace, role: str,
                 computed: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """flag -> EMBER_* variable -> default, for every setting of the role."""
    return {s.name: settings_registry.resolve(s, getattr(args, s.name), dict(os.environ),
                                              computed.get(s.name))
            for s in settings_registry.of_role(role)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember", description="Run Ember, a Spark-standalone-style cluster: its master and "
        "workers, their daemons, and the work submitted to them.",
        epilog="`ember COMMAND --help` shows a command's options. The playbook (`fab "
        "start-all`, ...) starts a whole cluster from an inventory.")
    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    master = sub.add_parser("master", help="run a master in the foreground")
    _role_flags(master, "master")
    master.add_argument("--consolidate", action="store_true",
                        default=os.environ.get("EMBER_DEPLOY_SPREAD_OUT", "") == "false",
                        help="fill one worker with an application's executors before the next "
                             "(default: spread them out; $EMBER_DEPLOY_SPREAD_OUT=false)")
    _common(master)
    master.set_defaults(run=run_master, header=True)

    worker = sub.add_parser("worker", help="run a worker in the foreground")
    worker.add_argument("master_url", metavar="MASTER_URL", nargs="?",
                        help="ember://host:port[,host:port...] (default: $EMBER_MASTER_URL)")
    _role_flags(worker, "worker")
    _common(worker)
    worker.set_defaults(run=run_worker, header=True)

    zookeeper = sub.add_parser(
        "zookeeper", help="run one ZooKeeper server of an ensemble in the foreground",
        description="One server of a ZooKeeper ensemble, from the host's ZooKeeper "
                    "installation, for clusters with no ZooKeeper of their own (the "
                    "inventory's recovery.ensemble).")
    _role_flags(zookeeper, "zookeeper")
    zookeeper.add_argument("--pid-file", metavar="FILE", type=Path,
                           help="write this process's pid here; removed at clean exit")
    zookeeper.set_defaults(run=run_zookeeper, header=True)

    start_timeout = settings_registry.named("daemon", "start_timeout")
    daemon = sub.add_parser(
        "daemon", help="start, stop or check a master/worker in the background",
        usage="ember daemon (start|stop|status|restart|logs|run) (master|worker|zookeeper) "
              "[INSTANCE] "
              "[--backend supervisor|plain|systemd] [-- ROLE_ARGS...]\n"
              "       ember daemon install-systemd [(master|worker|zookeeper) [INSTANCES]] [--now] "
              "[--scope system|user]\n"
              "       ember daemon uninstall-systemd [--scope system|user]\n"
              "       ember daemon supervisor-shutdown",
        description="spark-daemon.sh for Ember. Settings come from the environment and "
                    "$EMBER_CONF_DIR/ember-env.sh. status exits 0 running, 1 dead with a pid "
                    "file, 3 not running.")
    daemon.add_argument("action", choices=["start", "stop", "status", "restart", "reload",
                                           "logs", "run", "supervisor-shutdown",
                                           "install-systemd",
                                           "uninstall-systemd"])
    daemon.add_argument("role", nargs="?", choices=["master", "worker", "zookeeper"])
    daemon.add_argument("instance", nargs="?", default="1",
                        help="instance number (default 1); start, stop and status take a list: 1,2")
    _flag(daemon, settings_registry.named("daemon", "backend"), help="how roles run")
    _flag(daemon, settings_registry.named("systemd", "systemd_scope"),
          help="systemd: the system manager or the user's")
    daemon.add_argument("--now", action="store_true",
                        help="install-systemd: also start the units it enables")
    daemon.add_argument("--json", action="store_true",
                        help="start, stop, status: print one JSON object per instance")
    daemon.add_argument("--shutdown-supervisor", action="store_true",
                        help="stop: then shut supervisord down if it runs nothing else")
    daemon.add_argument("--timeout", metavar="SECONDS",
                        help="start: give up on readiness after SECONDS if that is sooner "
                             f"than ${start_timeout.env} ({start_timeout.shown}); what is not "
                             "ready is stopped")
    daemon.add_argument("--if-stopped", action="store_true",
                        help="start: exit 0, doing nothing, when the instance already runs")
    daemon.add_argument("--files-from-stdin", action="store_true",
                        help="first install the files bundled on the first line of standard "
                             "input (how the playbook ships ember-env.sh and the secret)")
    daemon.add_argument("--when-told", action="store_true",
                        help="start, stop: get ready, then wait for a line on standard input: "
                             "`go`, or `skip REASON`")
    daemon.add_argument("-n", "--lines", type=int, default=20, help="logs: how many lines")
    daemon.add_argument("--follow", "-f", action="store_true", help="logs: keep printing")
    daemon.add_argument("--grep", metavar="REGEX", type=daemon_cli.checked_grep,
                        help="logs: only matching lines")
    daemon.set_defaults(run=daemon_cli.run_daemon, role_args=[])

    submit = sub.add_parser(
        "submit", help="run a command on the cluster as a driver",
        usage="ember submit [--master URL] [--supervise] [--cores N] [--memory 1g] [--name N] "
              "[--env K=V]... [--wait] -- COMMAND [ARGS...]",
        description="Prints the driver id. With --wait, follows the driver to its end and "
                    "exits with its exit code.")
    _client_options(submit)
    submit.add_argument("--supervise", action="store_true",
                        help="restart the driver when it exits non-zero (backoff 1 s doubling, "
                             "at most 60 s)")
    _role_flags(submit, "submit")
    submit.add_argument("--name", default="", help="shown in the master's /json")
    submit.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="environment variable for the driver (repeatable)")
    submit.add_argument("--wait", action="store_true",
                        help="follow the driver to a final state; exit with its exit code")
    submit.set_defaults(run=run_submit, role_args=[])

    driver = sub.add_parser("driver", help="status, kill or list drivers",
                            usage="ember driver (status|kill) ID | ember driver "
                                  "(list|kill-all|clear) [--master URL] [--json]")
    driver.add_argument("action", choices=["status", "kill", "list", "kill-all", "clear"])
    driver.add_argument("driver_id", nargs="?", metavar="ID")
    _client_options(driver)
    driver.add_argument("--json", action="store_true", help="print JSON")
    driver.set_defaults(run=run_driver)

    for name, what, ttl in (
            ("rest-token", "a bearer token for the master's REST API, for `Authorization: "
             "Bearer TOKEN` when a secret is set", 3600.0),
            ("ui-token", "a token to log in to the master's web UI, which actions such as "
             "killing a driver need when a secret is set", 900.0)):
        token = sub.add_parser(name, help=f"mint {what.split(',')[0]}",
                               description=f"Mint {what}: signed with the secret, valid for "
                                           f"--ttl seconds.")
        _flag(token, settings_registry.named("common", "secret_file"))
        token.add_argument("--ttl", type=float, default=ttl, metavar="SECONDS",
                           help=f"how long the token is valid (default: {ttl:g})")
        token.set_defaults(run=run_rest_token)
    return parser


def run_rest_token(args: argparse.Namespace) -> int:
    from toolkit.runtime.wire import rest_token

    secret = _secret(args)
    if secret is None:
        raise ConfigError("no secret: pass --secret-file FILE or set EMBER_SECRET_FILE")
    if not 0 < args.ttl <= 366 * 86400:
        raise ConfigError(f"--ttl {args.ttl:g}: a token lives more than 0 seconds and at most "
                          f"a year")
    print(rest_token(secret, args.ttl))
    return 0


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--master", help="ember://host:port[,...] (default: $EMBER_MASTER_URL)")
    _flag(parser, settings_registry.named("common", "secret_file"))
    _flag(parser, settings_registry.named("common", "tls_dir"))
    parser.add_argument("--log-level", default="WARNING",
                        choices=settings_registry.LOG_LEVELS)


def print_command_header() -> None:
    """First lines of every run's output, as spark-class prints ``Spark Command: ...``."""
    argv = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    print("Ember command: " + shlex.join(a.decode(errors="replace") for a in argv))
    print("=" * 40, flush=True)


def run_master(args: argparse.Namespace) -> int:
    from toolkit.runtime import config, http, service
    from toolkit.runtime.config import MasterConfig
    from toolkit.runtime.master import Master

    values = _role_values(args, "master", {"host": config.default_host})
    host = values["host"]
    settings = MasterConfig(**values, keys=_role_keys(args, "master", host, say=True),
                            spread_out=not args.consolidate)
    config.check_exposure("master", host, settings.keys, args.insecure)
    master = Master(settings)
    server = http.master_server(master)
    server.login_to_read = _ui_login(args) == "always" and settings.keys.secret is not None
    return service.run(master, server, host, args.pid_file,
                       lambda: _role_keys(args, "master", host))


def run_worker(args: argparse.Namespace) -> int:
    from toolkit.runtime import config, http, service
    from toolkit.runtime.worker import Worker, WorkerConfig

    url = args.master_url or os.environ.get("EMBER_MASTER_URL")
    if not url:
        raise ConfigError("worker needs a master URL: ember worker ember://host:7077")
    values = _role_values(args, "worker", {
        "host": config.default_host, "cores": config.default_cores,
        "memory": config.default_memory_mb, "work_dir": lambda: config.ember_home() / "work"})
    host = values["host"]
    settings = WorkerConfig(masters=tuple(config.parse_master_url(url)), **values,
                            keys=_role_keys(args, "worker", host, say=True))
    config.check_exposure("worker", host, settings.keys, args.insecure)
    worker = Worker(settings)
    server = http.worker_server(worker)
    server.login_to_read = _ui_login(args) == "always" and settings.keys.secret is not None
    return service.run(worker, server, host, args.pid_file,
                       lambda: _role_keys(args, "worker", host))


def run_zookeeper(args: argparse.Namespace) -> int:
    from toolkit.runtime import config, ensemble

    values = _role_values(args, "zookeeper", {
        "data_dir": lambda: config.ember_home() / "zookeeper"})
    for name, flag in (("server_id", "--id"), ("servers", "--servers")):
        if values[name] is None:
            setting = settings_registry.named("zookeeper", name)
            raise ConfigError(f"zookeeper needs {flag} (or {setting.env})")
    return ensemble.run(ensemble.EnsembleConfig(**values), args.pid_file)


def _master_url(args: argparse.Namespace) -> str:
    from toolkit.runtime.config import parse_master_url

    url: str | None = args.master or os.environ.get("EMBER_MASTER_URL")
    if not url:
        raise ConfigError("no master: pass --master ember://host:7077 or set EMBER_MASTER_URL")
    parse_master_url(url)
    return url


def _driver_description(args: argparse.Namespace) -> m.DriverDescription:
    from toolkit.runtime import messages as m

    if not args.role_args:
        raise ConfigError("submit needs a command after --: ember submit -- python3 job.py")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"--env {item!r} is not NAME=VALUE")
        env[key] = value
    values = _role_values(args, "submit", {})
    return m.DriverDescription(list(args.role_args), values["cores"], values["memory"],
                               args.supervise, args.name, env)


def exit_code_of(status: m.DriverStatusResponse) -> int:
    """The exit code `ember submit --wait` returns for a driver's final status."""
    if status.state == "FINISHED":
        return 0
    if status.state == "KILLED":
        return 143  # as a shell reports a process ended by SIGTERM, however it really ended
    code = status.exit_code
    if code is None:
        return 1
    return 128 - code if code < 0 else code or 1


def _talk(command: str, conversation: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one client conversation with the master; a lost or silent master is exit 1."""
    import asyncio

    try:
        return asyncio.run(conversation())
    except (ConnectionError, TimeoutError) as exc:
        print(f"ember {command}: {exc or 'no answer from the master'}", file=sys.stderr)
        return 1


def run_submit(args: argparse.Namespace) -> int:
    from toolkit.runtime.client import SubmissionClient
    from toolkit.runtime.states import REPORTED_DRIVER_ENDS

    url = _master_url(args)
    desc = _driver_description(args)
    secret = _keys(args)

    async def go() -> int:
        async with await SubmissionClient.open(url, secret) as client:
            response = await client.submit(desc, watch=args.wait)
            if not response.success or response.driver_id is None:
                print(f"ember submit: refused: {response.message}", file=sys.stderr)
                return 1
            print(response.driver_id, flush=True)
            if not args.wait:
                return 0
            last = ""
            while True:
                status = await client.next_status()
                if status.state != last:
                    last = status.state or ""
                    detail = f" ({status.message})" if status.message else ""
                    print(f"{status.driver_id} {last} on {status.worker_id or '-'}{detail}",
                          file=sys.stderr, flush=True)
                if status.relaunched_as:
                    print(status.relaunched_as, flush=True)
                    continue
                if last in REPORTED_DRIVER_ENDS:
                    return exit_code_of(status)

    return _talk("submit", go)


def run_driver(args: argparse.Namespace) -> int:
    import json

    import msgspec

    from toolkit.runtime.client import SubmissionClient

    url = _master_url(args)
    if args.action in ("status", "kill") and not args.driver_id:
        raise ConfigError(f"driver {args.action} needs a driver id")
    secret = _keys(args)

    def show(response: object) -> None:
        data = msgspec.to_builtins(response)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(" ".join(f"{k}={v}" for k, v in data.items() if k != "type" and v is not None))

    async def go() -> int:
        async with await SubmissionClient.open(url, secret) as client:
            if args.action == "list":
                drivers = await client.list()
                if args.json:
                    print(json.dumps([msgspec.to_builtins(d) for d in drivers], indent=2))
                else:
                    for d in drivers:
                        print(f"{d.driver_id}  {d.state:<11} {d.worker_id or '-'}")
                return 0
            if args.action == "status":
                status = await client.status(args.driver_id)
                show(status)
                return 0 if status.found else 1
            done: m.KillDriverResponse | m.KillAllDriversResponse | (
                m.ClearCompletedDriversAndAppsResponse)
            if args.action == "kill":
                done = await client.kill(args.driver_id)
            elif args.action == "kill-all":
                done = await client.kill_all()
            else:
                done = await client.clear()
            show(done)
            return 0 if done.success else 1

    return _talk("driver", go)


def _log_level(args: argparse.Namespace) -> str:
    """master, worker: --log-level, else $EMBER_LOG_LEVEL, else INFO. Others: their flag."""
    if args.command in ("master", "worker", "zookeeper"):
        level: str = settings_registry.resolve(settings_registry.named("common", "log_level"),
                                               getattr(args, "log_level", None), os.environ)
        return level
    return getattr(args, "log_level", "WARNING")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    role_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, role_args = argv[:split], argv[split + 1:]
    args = build_parser().parse_args(argv)
    if role_args:
        if args.command not in ("daemon", "submit"):
            raise SystemExit(f"ember {args.command}: unexpected arguments after --")
        args.role_args = role_args
    try:
        logging.basicConfig(level=_log_level(args), format=LOG_FORMAT, stream=sys.stderr)
        printable.install()
        if getattr(args, "header", False):
            print_command_header()
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"ember {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
