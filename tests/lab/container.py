"""A host with a real systemd for integration tests of systemd units over SSH.

`systemd-nspawn -b` boots the machine's own systemd as pid 1 over a synthetic root (the
host's /usr bound read-only, a trimmed copy of /etc, empty /var, /tmp, /run, /root, /home),
inside a network namespace on a private bridge, so the host reaches the container's sshd at
10.78.<b>.10 by key, with its host key checked. Needs root and systemd-container
(`apt-get install systemd-container`) besides what netlab needs.

Systemd is only ever booted inside the container (`systemd-nspawn -D <root> -b`), never on
this machine's own root. The host's shadow and SSH host keys are not copied: the container
gets locked passwords and a fresh host key.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import itertools
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.netlab import PACKAGES, attach, make_bridge, run

SYSTEMD = Path("/lib/systemd/systemd")
SSHD = Path("/usr/sbin/sshd")
TOOLS = ("ip", "unshare", "ssh", "ssh-keygen", "systemd-nspawn")
# Never copied into the container's /etc: secrets of this machine.
SECRETS = {"shadow", "shadow-", "gshadow", "gshadow-", "private"}
_serial = itertools.count()


def missing_requirements() -> str | None:
    """Why a SystemdHost cannot run here, or None."""
    if os.geteuid() != 0:
        return ("a systemd host needs root (network namespaces, systemd-nspawn): "
                "run scripts/test as root")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {PACKAGES[tool]})"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is missing (apt-get install systemd)"
    if not SSHD.exists():
        return "openssh-server is not installed (apt-get install openssh-server)"
    return _nspawn_problem()


@functools.cache
def _nspawn_problem() -> str | None:
    """Run /bin/true in a throwaway nspawn container (no boot): does nspawn work here?"""
    with tempfile.TemporaryDirectory(prefix="nspawn-probe-") as tmp:
        root = Path(tmp)
        _skeleton(root)
        (root / "etc").mkdir()
        shutil.copyfile("/usr/lib/os-release", root / "etc" / "os-release")
        cgroups = _make_cgroups(f"ems-probe-{os.getpid()}")
        try:
            done = subprocess.run(
                [*_in_cgroups(cgroups), "unshare", "--mount", "--propagation", "private",
                 "systemd-nspawn", "-q", "--register=no", "--keep-unit", "--private-network",
                 "--console=pipe", "-D", str(root), "--bind-ro=/usr", "/usr/bin/true"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                check=False)
        except (OSError, subprocess.SubprocessError) as error:
            return f"systemd-nspawn cannot run a container here: {error}"
        finally:
            _remove_cgroups(cgroups)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-500:]
        return f"systemd-nspawn cannot run a container here: {tail}"
    return None


def _make_cgroups(label: str) -> list[Path]:
    """A new child cgroup of this process's own in the systemd-related hierarchies.

    With --keep-unit nspawn puts the container in payload/ and supervisor/ children of the
    caller's cgroup; a fresh cgroup per container keeps those apart and easy to remove.
    """
    made = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if controllers == "name=systemd":
            mount = Path("/sys/fs/cgroup/systemd")
        elif controllers == "":
            unified = Path("/sys/fs/cgroup/unified")
            mount = unified if unified.is_dir() else Path("/sys/fs/cgroup")
        else:
            continue
        if (mount / "cgroup.procs").exists():
            cgroup = mount / path.lstrip("/") / label
            with contextlib.suppress(OSError):  # a read-only cgroupfs: nspawn will say
                cgroup.mkdir()
                made.append(cgroup)
    return made


def _in_cgroups(cgroups: list[Path]) -> list[str]:
    """A prefix for argv: a shell that moves itself into the cgroups, then execs argv."""
    enter = "".join(f"echo $$ > {shlex.quote(str(c / 'cgroup.procs'))} && " for c in cgroups)
    return ["sh", "-c", enter + 'exec "$@"', "sh"]


def _remove_cgroups(cgroups: list[Path]) -> list[Path]:
    """rmdir the cgroups, innermost first, retrying while they drain; what is left."""
    deadline = time.monotonic() + 5
    for cgroup in cgroups:
        while cgroup.is_dir():
            for path, _dirs, _files in os.walk(cgroup, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            if not cgroup.is_dir() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    return [c for c in cgroups if c.is_dir()]


def _nspawn_pids(root: Path) -> list[int]:
    """The systemd-nspawn processes running a container on this root (as `-D root`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"systemd-nspawn") and (b"-D", bytes(root)) in set(
                    itertools.pairwise(argv)):
                pids.append(int(proc.name))
    return pids


def _skeleton(root: Path) -> None:
    """Empty top-level directories and the merged-/usr symlinks of a root."""
    for name in ("usr", "var/tmp", "var/log", "var/lib", "var/cache", "tmp", "run", "root",
                 "home", "proc", "sys", "dev", "srv", "opt", "mnt", "media"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var" / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    (root / "var" / "run").symlink_to("../run")
    (root / "var" / "lock").symlink_to("../run/lock")
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if Path("/usr", name).is_dir():
            (root / name).symlink_to(f"usr/{name}")


class SystemdHost:
    """A container booted by systemd-nspawn with systemd as pid 1, reachable over SSH."""

    def __init__(self, workdir: Path, name: str = "emsd") -> None:
        serial = next(_serial)
        pid = os.getpid()
        tag = f"{pid % 0xFFFF:04x}{serial % 10}"
        self.name = name
        self.machine = f"{name}-{tag}"  # nspawn's name for it: unique on this machine
        self.workdir = workdir
        self.netns = f"ems{tag}"
        self.bridge = f"emsb{tag}"
        self.veth = f"emsv{tag}"
        subnet = (pid + serial) % 250 + 2
        self.gateway = f"10.78.{subnet}.1"
        self.address = f"10.78.{subnet}.10"
        self.root = workdir / f"{name}-root"
        self.key = workdir / f"{name}_key"
        self.known_hosts = workdir / f"{name}_known_hosts"
        self.log = workdir / f"{name}-nspawn.log"
        self.base_prefix = Path(sys.base_prefix).resolve()
        self.cgroups: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None

    # Lifecycle -----------------------------------------------------------------------------

    def up(self) -> None:
        """Build the root and the network, boot the container and wait for SSH."""
        if _nspawn_pids(self.root):
            raise RuntimeError(f"{self.root} is the root of a running container")
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for old in (self.key, Path(f"{self.key}.pub"), self.known_hosts):
            old.unlink(missing_ok=True)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-client", "-f",
            str(self.key))
        self._build_root()
        self._network()
        self._boot()
        self.wait_ssh()

    def _build_root(self) -> None:
        root = self.root
        if root.exists():
            self._remove_root()
        root.mkdir(parents=True)
        _skeleton(root)
        shutil.copytree("/etc", root / "etc", symlinks=True,
                        ignore=lambda _dir, names: [n for n in names if n in SECRETS
                                                    or n.startswith("ssh_host_")])
        etc = root / "etc"
        # nspawn recognises an OS tree by its os-release, before /usr is bound in.
        (etc / "os-release").unlink(missing_ok=True)
        shutil.copyfile("/usr/lib/os-release", etc / "os-release")
        self._trim_units(etc)
        (etc / "fstab").write_text("")
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
        (etc / "hostname").write_text(self.name + "\n")
        self._shadow(etc)
        self._sshd(etc)
        ssh_dir = root / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(f"{self.key}.pub").read_text())
        authorized.chmod(0o600)
        (root / "root" / ".bashrc").write_text("")
        (root / "root" / ".profile").write_text("")

    def _trim_units(self, etc: Path) -> None:
        """Only ssh.service stays enabled: the machine's other services must not start."""
        system = etc / "systemd" / "system"
        for wants in system.glob("*.wants"):
            for link in wants.iterdir():
                if link.name != "ssh.service" and link.is_symlink():
                    link.unlink()
        multi = system / "multi-user.target.wants"
        multi.mkdir(parents=True, exist_ok=True)
        ssh = multi / "ssh.service"
        if not ssh.is_symlink():
            ssh.unlink(missing_ok=True)
            ssh.symlink_to("/lib/systemd/system/ssh.service")
        # No login prompt on nspawn's console.
        for unit in ("console-getty.service", "getty.target"):
            mask = system / unit
            mask.unlink(missing_ok=True)
            mask.symlink_to("/dev/null")

    def _shadow(self, etc: Path) -> None:
        """Locked passwords for every user and group: nothing of the machine's shadow."""
        users = [line.split(":", 1)[0] for line in (etc / "passwd").read_text().splitlines()
                 if line.strip()]
        groups = [line.split(":", 1)[0] for line in (etc / "group").read_text().splitlines()
                  if line.strip()]
        for path, lines in ((etc / "shadow", [f"{u}:*:19000:0:99999:7:::" for u in users]),
                            (etc / "gshadow", [f"{g}:*::" for g in groups])):
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o640)
            with contextlib.suppress(KeyError):
                os.chown(path, 0, grp.getgrnam("shadow").gr_gid)

    def _sshd(self, etc: Path) -> None:
        ssh = etc / "ssh"
        ssh.mkdir(exist_ok=True)
        for old in ssh.glob("ssh_host_*"):
            old.unlink()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}", "-f",
            str(ssh / "ssh_host_ed25519_key"))
        config = ssh / "sshd_config.d"
        if config.is_dir():
            shutil.rmtree(config)
        config.mkdir()
        (ssh / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.address}",
            "HostKey /etc/ssh/ssh_host_ed25519_key",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM yes",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100:30:200",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]))
        public = (ssh / "ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts.write_text(f"{self.address} {public[0]} {public[1]}\n")

    def _network(self) -> None:
        make_bridge(self.bridge, self.gateway)
        attach(self.netns, self.veth, self.address, self.bridge)

    def _boot(self) -> None:
        self.cgroups = _make_cgroups(f"ems-{self.machine}")
        argv = [*_in_cgroups(self.cgroups), "unshare", "--mount", "--propagation", "private",
                "systemd-nspawn", "-D", str(self.root), "-M", self.machine,
                f"--hostname={self.name}",
                "--register=no", "--keep-unit", "--console=read-only",
                f"--network-namespace-path=/run/netns/{self.netns}",
                "--bind-ro=/usr"]
        if not self.base_prefix.is_relative_to("/usr"):
            argv.append(f"--bind-ro={self.base_prefix}")
        argv.append("-b")
        # The container gets a pure cgroup v2 tree even on a hybrid host: under the legacy
        # name=systemd hierarchy its systemd never learns that a cgroup emptied (no release
        # agent in a container), so logged-out sessions linger and halting hangs on user@0.
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait_ssh(self, timeout: float = 30) -> None:
        """Until sshd accepts connections and `ssh root@address true` succeeds."""
        deadline = time.monotonic() + timeout
        last = "sshd did not accept connections on port 22"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with socket.create_connection((self.address, 22), 0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            done = self.ssh("true", check=False, timeout=10)
            if done.returncode == 0:
                return
            last = f"ssh root@{self.address} true failed: {done.stderr.strip()}"
            time.sleep(0.2)
        raise RuntimeError(f"the container at {self.address} did not come up in {timeout} s: "
                           f"{last}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of nspawn's output (the container's console)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no nspawn log)"
        return "\n".join(text.splitlines()[-lines:])

    # Use ----------------------------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        """An OpenSSH command line that logs into the container as root (add the command)."""
        return ["ssh", "-F", "none", "-i", str(self.key),
                "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR",
                f"root@{self.address}"]

    def ssh(self, command: str, check: bool = True,
            timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the container over OpenSSH, host key checked."""
        done = subprocess.run([*self.ssh_argv(), command], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"ssh {command!r} exited with {done.returncode}: "
                               f"{done.stderr.strip()}")
        return done

    # Teardown ------------------------------------------------------------------------------

    def down(self) -> None:
        """Halt the container (SIGTERM, SIGKILL after 10 s), delete its network and root."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(10)
        self.proc = None
        # Anything of the container's that outlived it.
        for pid in {*self._netns_pids(), *self._cgroup_pids()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.cgroups = _remove_cgroups(self.cgroups)
        with contextlib.suppress(OSError):
            Path("/run/systemd/nspawn/propagate", self.machine).rmdir()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        self._remove_root()

    def _netns_pids(self) -> list[int]:
        if not Path("/run/netns", self.netns).exists():
            return []
        done = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True,
                              text=True, check=False)
        return [int(p) for p in done.stdout.split()]

    def _cgroup_pids(self) -> list[int]:
        pids = []
        for cgroup in self.cgroups:
            for procs in cgroup.rglob("cgroup.procs") if cgroup.is_dir() else []:
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in procs.read_text().split()]
        return pids

    def _remove_root(self) -> None:
        """Delete the synthetic root, unless something is still mounted inside it."""
        if not self.root.exists():
            return
        if _nspawn_pids(self.root):  # its mounts live in the container's mount namespace
            raise RuntimeError(f"not removing {self.root}: the root of a running container")
        prefix = str(self.root.resolve()) + "/"
        with open("/proc/self/mountinfo") as mounts:
            busy = [line.split()[4] for line in mounts
                    if (line.split()[4] + "/").startswith(prefix)]
        if busy:
            raise RuntimeError(f"not removing {self.root}: still mounted: {busy}")
        shutil.rmtree(self.root)

    def __enter__(self) -> SystemdHost:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
