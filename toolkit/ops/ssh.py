"""A host reached over SSH (paramiko, through Fabric's connection) with its host key verified
against the inventory's known_hosts: Fabric's own default silently accepts any key."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import math
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.inventory import HostEntry, SSHSettings
from toolkit.ops.transport import HostError, Process, Pump, Session, Transport, command_line


class _AcceptNew:
    """Like OpenSSH's StrictHostKeyChecking=accept-new: trust and record unknown hosts only."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


# paramiko's transport thread logs each failure it also raises: Ember reports it once, per host
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class SSHHost(Transport):
    """A host reached over SSH with its host key verified."""

    def __init__(self, entry: HostEntry, ssh: SSHSettings, port: int | None = None) -> None:
        user, _, address = entry.address.rpartition("@")
        self.name = address
        self._address = address
        self._user = user or ssh.user
        self._port = port or ssh.port
        self._ssh = ssh
        self._conn: Any = None
        self._gateway: Any = None
        self._failure: HostError | None = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        self._connection()

    def _connection(self) -> Any:
        """The open connection; a host that failed once is not retried by this object."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._conn is None:
                try:
                    self._conn = self._open()
                except HostError as exc:
                    self._failure = exc
                    raise
                except Exception as exc:  # paramiko raises many kinds
                    self._failure = HostError(f"SSH failed: {exc}")
                    raise self._failure from None
            return self._conn

    def _connection_to(self, address: str, user: str | None, port: int,
                       gateway: Any = None) -> Any:
        """A Fabric Connection that reads no ~/.ssh/config (whose hops would skip our host-key
        checks) and verifies the host key against the inventory's known_hosts."""
        import paramiko
        from fabric import Config, Connection

        ssh = self._ssh
        kwargs: dict[str, Any] = {"allow_agent": False, "look_for_keys": ssh.key_file is None,
                                  "banner_timeout": ssh.connect_timeout,
                                  "auth_timeout": ssh.connect_timeout}
        if ssh.key_file is not None:
            kwargs["key_filename"] = str(ssh.key_file)
        conn = Connection(address, user=user, port=port,
                          connect_timeout=max(1, math.ceil(ssh.connect_timeout)),
                          connect_kwargs=kwargs, gateway=gateway,
                          config=Config(ssh_config=paramiko.SSHConfig()))
        self._verify_keys(conn.client)
        return conn

    def _open(self) -> Any:
        import paramiko

        ssh = self._ssh
        if ssh.jump_host:
            jump_user, _, jump = ssh.jump_host.rpartition("@")
            self._gateway = self._connection_to(jump, jump_user or ssh.user, ssh.port)
        conn = self._connection_to(self._address, self._user, self._port, self._gateway)
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostError(f"HOST KEY CHANGED: the host offered {_fingerprint(exc.key)}, "
                            f"{ssh.known_hosts} expects {_fingerprint(exc.expected_key)}; "
                            f"refusing to connect") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            reasons = sorted({e.strerror or str(e) for e in exc.errors.values()})
            raise HostError(f"cannot connect to port {self._port}: "
                            f"{'; '.join(reasons)}") from None
        except paramiko.SSHException as exc:
            text = str(exc)
            if "not found in known_hosts" in text:
                raise HostError(
                    f"host key unknown: not in {ssh.known_hosts} and ssh.host_key_policy is "
                    f"reject. Verify the host's key and add it (for example with "
                    f"ssh-keyscan), or set host_key_policy: accept-new") from None
            # paramiko says "No existing session" when the handshake never started in time
            if "protocol banner" in text or "No existing session" in text:
                raise HostError(f"no SSH banner within {ssh.connect_timeout:g} s: port "
                                f"{self._port} accepts connections but no SSH server answers"
                                ) from None
            raise HostError(f"SSH failed: {text}") from None
        except TimeoutError:
            raise HostError(f"SSH connect to port {self._port} timed out after "
                            f"{ssh.connect_timeout:g} s") from None
        except OSError as exc:
            raise HostError(f"cannot connect to port {self._port}: "
                            f"{exc.strerror or exc}") from None
        return conn

    def _verify_keys(self, client: Any) -> None:
        import paramiko

        client.get_host_keys().clear()
        if self._ssh.known_hosts.exists():
            client.load_host_keys(str(self._ssh.known_hosts))
        policy = (_AcceptNew(self._ssh.known_hosts) if self._ssh.host_key_policy == "accept-new"
                  else paramiko.RejectPolicy())
        client.set_missing_host_key_policy(policy)

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> Session:
        """The command on its own channel of the open connection."""
        line = command_line(argv, env)
        transport = self._connection().client.get_transport()
        try:
            channel = transport.open_session(timeout=self._ssh.connect_timeout)
            channel.exec_command(line)
        except Exception as exc:  # paramiko raises many kinds
            raise HostError(f"cannot run a command: {exc.__class__.__name__}: {exc}") from None
        return _Channel(self.name, line, channel)

    def put(self, path: str, data: bytes, mode: int = 0o644) -> bool:
        """Atomic (temp file + rename), only when changed. A private file (mode 0600) goes in
        a directory made 0700 first, so nobody can open its temp file while it is written."""
        import paramiko

        try:
            sftp = self._connection().sftp()
            directory, _, name = path.rpartition("/")
            self._makedirs(sftp, directory)
            if not mode & 0o077:
                sftp.chmod(directory, 0o700)
            if self.read(path) == data:
                sftp.chmod(path, mode)
                return False
            # a name of its own, created exclusively: parallel uploads of one path do not
            # collide, and nothing planted there (a symlink) is followed
            tmp = f"{directory}/.{name}.{secrets.token_hex(8)}.tmp"
            try:
                with sftp.open(tmp, "wbx") as handle:  # w: writable, x: O_EXCL
                    sftp.chmod(tmp, mode)
                    handle.write(data)
                sftp.posix_rename(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                    sftp.remove(tmp)
                raise
        except HostError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostError(f"cannot write {path}: {exc}") from None
        return True

    @staticmethod
    def _makedirs(sftp: Any, directory: str) -> None:
        """mkdir -p over SFTP: no remote shell (each costs a login's rc files)."""
        missing = []
        while directory and directory != "/":
            try:
                sftp.stat(directory)
                break
            except OSError:
                missing.append(directory)
                directory = directory.rpartition("/")[0]
        for folder in reversed(missing):
            with contextlib.suppress(OSError):  # made meanwhile by a parallel upload
                sftp.mkdir(folder)

    def read(self, path: str) -> bytes | None:
        try:
            with self._connection().sftp().open(path, "rb") as handle:
                return bytes(handle.read())
        except OSError:
            return None

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._gateway):
                if conn is not None:
                    conn.close()
            self._conn = self._gateway = None


class _Channel(Process):
    """A command on an SSH channel: the same Process as a local one."""

    def __init__(self, name: str, line: str, channel: Any) -> None:
        self._channel = channel
        super().__init__(name, line, Pump([channel.recv, channel.recv_stderr]))

    def _write(self, data: bytes) -> None:
        self._channel.sendall(data)

    def _close_input(self) -> None:
        self._channel.shutdown_write()

    def _wait(self, timeout: float | None) -> int | None:
        if not self._channel.status_event.wait(timeout):
            return None
        code = int(self._channel.recv_exit_status())
        return 255 if code == -1 else code  # -1: the server gave no exit status

    def kill(self) -> None:
        self._channel.close()


def _fingerprint(key: Any) -> str:
    """As OpenSSH shows a key: its type and SHA256 fingerprint."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"
