"""Real `ember` processes for integration tests: free ports, polling, guaranteed cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a process that binds port 0 (a
    worker's RPC port, any client) is never given it meanwhile."""
    high = _ephemeral_low() - 1
    while True:
        port = random.randint(10000, high) if high > 10000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])


def free_ports(count: int, avoid: tuple[int, ...] = ()) -> int:
    """The first of ``count`` ports in a row that are free now (worker instances step their
    ports by one), none of them in ``avoid``."""
    while True:
        first = free_port()
        wanted = range(first, first + count)
        if first + count > 65535 or set(wanted) & set(avoid):
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in wanted:
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def get_json(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> Any:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return json.load(response)


def cluster_ca(secret_file: Path) -> ssl.SSLContext:
    """What a client of a playbook's cluster verifies its HTTPS with: the CA bundle the
    playbook keeps beside the inventory's secret."""
    folder = Path(f"{secret_file}.tls")
    bundle = folder / "trusted.pem" if (folder / "trusted.pem").exists() else folder / "ca.pem"
    return ssl.create_default_context(cafile=str(bundle))


def http_status(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class Proc:
    """One `python -m toolkit ...` process with its output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log
        full_env = {**os.environ, **(env or {})}
        with open(log, "ab") as out:
            self.popen = subprocess.Popen([sys.executable, "-m", "toolkit", *args], stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=full_env, start_new_session=True)
        self.pid = self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(8)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class Cluster:
    """Starts masters and workers on 127.0.0.1 with free ports; stops them all at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self._count = 0

    def _proc(self, name: str, args: list[str], env: dict[str, str] | None) -> Proc:
        self._count += 1
        proc = Proc(args, self.tmp / f"{self._count:02d}-{name}.log", env)
        self.procs.append(proc)
        return proc

    def master(self, *extra: str, port: int | None = None, timeout: float | None = 60,
               env: dict[str, str] | None = None, wait: bool = True,
               insecure: bool | None = None) -> MasterProc:
        port = port or free_port()
        webui = free_port()
        args = ["master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(webui)]
        if timeout is not None:
            args += ["--worker-timeout", str(timeout)]
        proc = MasterProc(self._proc("master", [*args, *extra, *_open(extra, env, insecure)],
                                     env), port, webui, _tls_of(extra))
        if wait:
            proc.wait_ready()
        return proc

    def worker(self, master_url: str, *extra: str, cores: int = 2, memory: str = "1g",
               env: dict[str, str] | None = None, insecure: bool | None = None) -> WorkerProc:
        webui = free_port()
        work_dir = self.tmp / f"work-{self._count + 1}"
        args = ["worker", master_url, "--host", "127.0.0.1", "--webui-port", str(webui),
                "--work-dir", str(work_dir)]
        if cores:
            args += ["--cores", str(cores)]
        if memory:
            args += ["--memory", memory]
        return WorkerProc(self._proc("worker", [*args, *extra, *_open(extra, env, insecure)],
                                     env), webui, work_dir, _tls_of(extra))

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _open(args: tuple[str, ...], env: dict[str, str] | None, insecure: bool | None
          ) -> list[str]:
    """--insecure (an open port on loopback, as the tests of everything but the secret use)
    for a role given no secret, unless ``insecure`` is False: a role given no secret and not
    --insecure makes and uses its user's own (test_security checks that)."""
    given = "--secret-file" in args or (env or {}).get("EMBER_SECRET_FILE")
    if insecure is False or given or "--insecure" in args:
        return []
    return ["--insecure"]


def _tls_of(args: tuple[str, ...]) -> ssl.SSLContext | None:
    """The client context of a role started with --tls-dir DIR (its web UI is HTTPS)."""
    if "--tls-dir" not in args:
        return None
    folder = Path(args[args.index("--tls-dir") + 1])
    return ssl.create_default_context(cafile=str(folder / "ca.pem"))


class MasterProc:
    def __init__(self, proc: Proc, port: int, webui: int,
                 tls: ssl.SSLContext | None = None) -> None:
        self.proc, self.port, self.webui = proc, port, webui
        self.url = f"ember://127.0.0.1:{port}"
        self.tls = tls
        self.ui = f"{'https' if tls else 'http'}://127.0.0.1:{webui}"

    def json(self, field: str = "") -> Any:
        return get_json(f"{self.ui}/json{'/' + field if field else ''}", context=self.tls)

    def wait_ready(self, timeout: float = 15) -> None:
        def ready() -> bool:
            if self.proc.popen.poll() is not None:
                raise AssertionError(f"master exited early:\n{self.proc.log()}")
            return http_status(f"{self.ui}/readyz", self.tls) == 200
        wait_for(ready, timeout, "master /readyz")

    def worker_entry(self, worker_id: str) -> dict[str, Any] | None:
        return next((w for w in self.json()["workers"] if w["id"] == worker_id), None)

    def wait_joined(self, worker: WorkerProc) -> str:
        """Wait until ``worker`` has registered and this master lists it ALIVE; its id."""
        worker_id = str(worker.wait_registered()["id"])
        self.wait_state(worker_id, "ALIVE")
        return worker_id

    def wait_state(self, worker_id: str, state: str, timeout: float = 15) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            entry = self.worker_entry(worker_id)
            return entry if entry and entry["state"] == state else None
        return wait_for(check, timeout, f"{worker_id} {state} in master /json")


class WorkerProc:
    def __init__(self, proc: Proc, webui: int, work_dir: Path,
                 tls: ssl.SSLContext | None = None) -> None:
        self.proc, self.webui, self.work_dir = proc, webui, work_dir
        self.tls = tls
        self.ui = f"{'https' if tls else 'http'}://127.0.0.1:{webui}"

    def json(self) -> Any:
        return get_json(f"{self.ui}/json", context=self.tls)

    def wait_registered(self, timeout: float = 15) -> dict[str, Any]:
        def registered() -> dict[str, Any] | None:
            if self.proc.popen.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.proc.log()}")
            data = self.json()
            return data if data["masterurl"] else None
        return wait_for(registered, timeout, "worker registered")

    @property
    def id(self) -> str:
        return str(wait_for(lambda: self.json()["id"], 15, "worker id"))


def ember(*args: str, env: dict[str, str] | None = None, timeout: float = 60
          ) -> subprocess.CompletedProcess[str]:
    """Run one `ember` command to completion; its exit code and output."""
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


@contextlib.contextmanager
def cluster_in(tmp: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp)
    try:
        yield cluster
    finally:
        cluster.stop_all()
