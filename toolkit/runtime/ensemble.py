"""`ember zookeeper`: one server of a ZooKeeper ensemble, for clusters with no ZooKeeper of
their own, run from the host's ZooKeeper installation (Debian's ``zookeeper`` package).

It writes the server's ``zoo.cfg`` and ``myid`` into its data directory from its flags, starts
ZooKeeper's JVM as its child and stays its parent, so the daemon layer treats it like a master
or a worker: its pid file, its log (the JVM's output), READY once the server serves (a member
of a quorum: leader or follower; standalone with one server), SIGTERM passed on, and the JVM's
exit code as its own, so a supervisor restarts a server that died.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from toolkit.base.files import write_atomic
from toolkit.base.notify import sd_notify
from toolkit.base.pidfile import remove_pid_file, write_pid_file
from toolkit.errors import ConfigError
from toolkit.settings import default_of

logger = logging.getLogger("toolkit.runtime.ensemble")

MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
SERVING = ("leader", "follower", "standalone")
POLL = 0.2


@dataclass(frozen=True)
class EnsembleConfig:
    server_id: int
    servers: tuple[tuple[str, int, int], ...]
    data_dir: Path
    client_port: int = default_of("zookeeper", "client_port")
    tick_ms: int = default_of("zookeeper", "tick_ms")
    heap: int = default_of("zookeeper", "heap")
    classpath: str = default_of("zookeeper", "classpath")
    java: str = "java"

    def __post_init__(self) -> None:
        if not 1 <= self.server_id <= len(self.servers):
            raise ConfigError(f"--id {self.server_id}: --servers lists {len(self.servers)} "
                              f"servers, so the id is 1 to {len(self.servers)}")

    @property
    def host(self) -> str:
        """This server's own address, where it serves clients too."""
        return self.servers[self.server_id - 1][0]


def zoo_cfg(config: EnsembleConfig) -> str:
    """ZooKeeper's configuration, from the flags alone (nothing of the host's /etc)."""
    lines = [
        "# Written by `ember zookeeper` from its flags; edits are lost at its next start.",
        f"tickTime={config.tick_ms}",
        "initLimit=10",
        "syncLimit=5",
        f"dataDir={config.data_dir}",
        f"clientPort={config.client_port}",
        f"clientPortAddress={config.host}",
        "admin.enableServer=false",
        "4lw.commands.whitelist=srvr,ruok",
        "autopurge.snapRetainCount=3",
        "autopurge.purgeInterval=1",
    ]
    if len(config.servers) > 1:
        lines += [f"server.{n}={host}:{peer}:{election}"
                  for n, (host, peer, election) in enumerate(config.servers, 1)]
    return "\n".join(lines) + "\n"


def mode(host: str, port: int, timeout: float = 1.0) -> str | None:
    """The server's ``srvr`` answer: ``leader``, ``follower`` or ``standalone`` while it serves;
    ``not serving`` (no quorum yet); None when it does not answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"srvr")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return None
    for line in answer.decode("utf-8", "replace").splitlines():
        if line.startswith("Mode: "):
            return line[len("Mode: "):].strip()
    return "not serving"


def serving(host: str, port: int) -> bool:
    return mode(host, port) in SERVING


def command(config: EnsembleConfig) -> list[str]:
    return [config.java, f"-Xmx{config.heap}m",
            # slf4j-simple: ZooKeeper's log to the role's log, with times, as the others
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
            "-Dorg.slf4j.simpleLogger.showThreadName=false",
            "-cp", config.classpath, MAIN, str(config.data_dir / "zoo.cfg")]


def run(config: EnsembleConfig, pid_file: Path | None) -> int:
    """Write the configuration, run the server until it ends or is told to stop."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(config.data_dir / "myid", f"{config.server_id}\n".encode(), 0o600)
        write_atomic(config.data_dir / "zoo.cfg", zoo_cfg(config).encode(), 0o600)
    except OSError as exc:
        raise ConfigError(f"ZooKeeper's data dir {config.data_dir}: "
                          f"{exc.strerror or exc}") from None
    logger.info("Starting ZooKeeper server %d of %d (%s:%d), data in %s", config.server_id,
                len(config.servers), config.host, config.client_port, config.data_dir)
    try:
        child = subprocess.Popen(command(config), stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ConfigError(f"cannot run {config.java}: {exc.strerror or exc} (ZooKeeper needs "
                          "Java: Debian's zookeeper package brings it)") from None
    stopping: list[int] = []

    def pass_on(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)
    if pid_file is not None:
        write_pid_file(pid_file)
    try:
        ready = False
        while child.poll() is None:
            if not ready and serving(config.host, config.client_port):
                ready = True
                logger.info("ZooKeeper server %d serves clients at %s:%d", config.server_id,
                            config.host, config.client_port)
                sd_notify("READY=1", f"STATUS=serving at {config.host}:{config.client_port}")
            time.sleep(POLL)
        code = child.returncode
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if pid_file is not None:
            remove_pid_file(pid_file)
    if stopping:
        logger.info("ZooKeeper server %d stopped", config.server_id)
        return 0
    logger.error("ZooKeeper server %d exited with %s", config.server_id, code)
    return code if code > 0 else 1
