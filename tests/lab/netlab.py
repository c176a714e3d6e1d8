"""A lab of hosts on one machine: each a network namespace with its own sshd, hostname, pid
space and home directory, on a private bridge. Needs root, iproute2, util-linux and sshd.

Host i has address 10.<a>.<b>.(10 + i) and runs `sshd` as pid 1 of its own pid namespace, so
every daemon started over SSH lives and dies with that host. The same path (``common``) is
backed by a per-host directory, so each host has its own ember home and venv.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces): run scripts/test as root"
    for tool in ("ip", "unshare", "ssh-keygen", "setsid"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {PACKAGES[tool]})"
    if not Path("/usr/sbin/sshd").exists():
        return "openssh-server is not installed (apt-get install openssh-server)"
    return None


PACKAGES = {"ip": "iproute2", "unshare": "util-linux", "setsid": "util-linux",
            "ssh": "openssh-client", "ssh-keygen": "openssh-client",
            "systemd-nspawn": "systemd-container"}


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def make_bridge(bridge: str, gateway: str) -> None:
    """A bridge with this machine's address on it: the hosts' network."""
    run("ip", "link", "add", bridge, "type", "bridge")
    run("ip", "addr", "add", f"{gateway}/24", "dev", bridge)
    run("ip", "link", "set", bridge, "up")


def attach(netns: str, veth: str, address: str, bridge: str) -> None:
    """A new network namespace whose eth0 has ``address`` and sits on ``bridge``."""
    run("ip", "netns", "add", netns)
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
    run("ip", "link", "set", f"{veth}p", "netns", netns)
    inside = ("ip", "netns", "exec", netns)
    run(*inside, "ip", "link", "set", f"{veth}p", "name", "eth0")
    run(*inside, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    run(*inside, "ip", "link", "set", "eth0", "up")
    run(*inside, "ip", "link", "set", "lo", "up")
    run("ip", "link", "set", veth, "master", bridge)
    run("ip", "link", "set", veth, "up")


@dataclass
class LabHost:
    index: int
    name: str
    netns: str
    veth: str
    address: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None


class Lab:
    def __init__(self, workdir: Path, count: int) -> None:
        tag = f"{os.getpid() % 0xFFFF:04x}"
        self.tag = tag
        self.workdir = workdir
        subnet = 100 + os.getpid() % 100
        self.prefix = f"10.77.{subnet}"
        self.bridge = f"embr{tag}"
        self.gateway = f"{self.prefix}.1"
        self.common = Path(f"/run/eml-{tag}")  # the same path on every host, short for AF_UNIX
        self.key = workdir / "client_key"
        self.known_hosts = workdir / "known_hosts"
        self.hosts = [LabHost(i, f"h{i}", f"eml{tag}h{i}", f"ev{tag}{i}",
                              f"{self.prefix}.{10 + i}", workdir / f"h{i}")
                      for i in range(count)]

    # Lifecycle -----------------------------------------------------------------------------

    def up(self) -> None:
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        self.common.mkdir(parents=True, exist_ok=True)
        make_bridge(self.bridge, self.gateway)
        Path("/run/sshd").mkdir(exist_ok=True)
        lines = []
        for host in self.hosts:
            attach(host.netns, host.veth, host.address, self.bridge)
            lines.append(f"{host.address} {self._host_key(host)}")
            self.start_sshd(host)
        self.known_hosts.write_text("\n".join(lines) + "\n")
        for host in self.hosts:
            self.wait_ssh(host)

    def _host_key(self, host: LabHost) -> str:
        (host.root / "home").mkdir(parents=True, exist_ok=True)
        key = host.root / "ssh_host_ed25519_key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        (host.root / "sshd_config").write_text("\n".join([
            f"ListenAddress {host.address}:22",
            f"HostKey {key}",
            f"PidFile {host.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.key}.pub",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "UseDNS no",
            "MaxStartups 100:30:200",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]))
        public = (host.root / "ssh_host_ed25519_key.pub").read_text().split()
        return f"{public[0]} {public[1]}"

    def start_sshd(self, host: LabHost) -> None:
        script = (f"hostname {host.name}; mount --bind {host.root / 'home'} {self.common}; "
                  f"exec /usr/sbin/sshd -D -f {host.root / 'sshd_config'} "
                  f"-E {host.root / 'sshd.log'}")
        host.proc = subprocess.Popen(
            ["setsid", "ip", "netns", "exec", host.netns, "unshare", "--uts", "--mount",
             "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ssh(self, host: LabHost, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((host.address, 22), 0.2):
                return
            time.sleep(0.02)
        raise RuntimeError(f"sshd on {host.address} did not come up")

    def stop_host(self, host: LabHost) -> None:
        """The machine goes down: its sshd (pid 1 of its namespace) and everything under it."""
        if host.proc is not None and host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait(10)
        for pid in self.pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def pids(self, host: LabHost) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                              text=True, check=False)
        return [int(p) for p in done.stdout.split()]

    def cut(self, host: LabHost) -> None:
        run("ip", "link", "set", host.veth, "down")

    def mend(self, host: LabHost) -> None:
        run("ip", "link", "set", host.veth, "up")

    def down(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                self.stop_host(host)
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            self.common.rmdir()

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
