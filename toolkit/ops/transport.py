"""Host transports with one API: ``run`` an argv, ``put`` a file, ``read`` a file.

``LocalHost`` runs here without a shell; ``SSHHost`` goes over Fabric/paramiko with the host key
verified against the inventory's known_hosts (Fabric's own default silently accepts any key).
Commands are argv lists, quoted with shlex for the remote shell: no inventory value can inject.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import logging
import math
import os
import secrets
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from toolkit.errors import EmberError
from toolkit.files import write_atomic
from toolkit.inventory import HostEntry, SSHSettings


class HostError(EmberError, ConnectionError):
    """A host could not be reached, or refused us; the message says which and why."""


@dataclass(frozen=True)
class Result:
    host: str
    command: str
    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, lines: int = 10) -> str:
        return "\n".join((self.stdout + self.stderr).strip().splitlines()[-lines:])


class Session(Protocol):
    """A command that is still running: more input can be sent before it is finished."""

    def send(self, data: bytes) -> None: ...
    def finish(self, data: bytes = b"", timeout: float | None = None) -> Result: ...


class Host(Protocol):
    name: str

    def connect(self) -> None: ...
    def run(self, argv: list[str], env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Result: ...
    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> Session: ...
    def put(self, path: str, data: bytes, mode: int = 0o644) -> bool: ...
    def read(self, path: str) -> bytes | None: ...
    def stream(self, argv: list[str], on_line: Callable[[str], None],
               stop: threading.Event) -> int: ...
    def close(self) -> None: ...


def command_line(argv: list[str], env: Mapping[str, str] | None = None) -> str:
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return shlex.join([*prefix, *argv])


class LocalHost:
    """The machine running the playbook; no SSH."""

    def __init__(self, name: str = "localhost") -> None:
        self.name = name

    def connect(self) -> None:
        pass

    def run(self, argv: list[str], env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Result:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env={**_clean_environ(), **(env or {})},
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as exc:
            return Result(self.name, command_line(argv, env), 124, _text(exc.stdout),
                          f"timed out after {timeout} s")
        except OSError as exc:
            return Result(self.name, command_line(argv, env), 127, "", str(exc))
        return Result(self.name, command_line(argv, env), done.returncode, done.stdout,
                      done.stderr)

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> Session:
        return _LocalSession(self.name, argv, env)

    def put(self, path: str, data: bytes, mode: int = 0o644) -> bool:
        return write_atomic(Path(path), data, mode)

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def stream(self, argv: list[str], on_line: Callable[[str], None],
               stop: threading.Event) -> int:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, stdin=subprocess.DEVNULL, env=_clean_environ())
        def stop_when_asked() -> None:
            stop.wait()
            proc.terminate()

        threading.Thread(target=stop_when_asked, daemon=True).start()
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        return proc.wait()

    def close(self) -> None:
        pass


class _LocalSession:
    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None) -> None:
        self._name = name
        self._command = command_line(argv, env)
        self._failure: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE,
                                          env={**_clean_environ(), **(env or {})})
        except OSError as exc:
            self._failure = str(exc)

    def send(self, data: bytes) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.write(data)
                self._proc.stdin.flush()

    def finish(self, data: bytes = b"", timeout: float | None = None) -> Result:
        if self._proc is None:
            return Result(self._name, self._command, 127, "", self._failure or "")
        try:
            out, err = self._proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, err = self._proc.communicate()
            return Result(self._name, self._command, 124, _text(out),
                          _text(err) + f"timed out after {timeout} s")
        return Result(self._name, self._command, self._proc.returncode, _text(out), _text(err))


def _clean_environ() -> dict[str, str]:
    """This process's environment without EMBER_*: the inventory decides those, as on SSH."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


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


class SSHHost:
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

    def run(self, argv: list[str], env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Result:
        line = command_line(argv, env)
        conn = self._connection()
        from invoke.exceptions import CommandTimedOut

        try:
            done = conn.run(line, hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut as exc:  # as LocalHost says it: exit 124
            return Result(self.name, line, 124, _text(exc.result.stdout),
                          _text(exc.result.stderr) + f"timed out after {timeout} s")
        except Exception as exc:  # the connection failed: raised, as start and put do
            raise HostError(f"cannot run a command: {exc.__class__.__name__}: {exc}") from None
        return Result(self.name, line, done.exited, done.stdout, done.stderr)

    def start(self, argv: list[str], env: Mapping[str, str] | None = None) -> Session:
        """The command on its own channel of the open connection, its stdin kept open."""
        line = command_line(argv, env)
        transport = self._connection().client.get_transport()
        try:
            channel = transport.open_session(timeout=self._ssh.connect_timeout)
            channel.exec_command(line)
        except Exception as exc:  # paramiko raises many kinds
            raise HostError(f"cannot run a command: {exc}") from None
        return _SSHSession(self.name, line, channel)

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

    def stream(self, argv: list[str], on_line: Callable[[str], None],
               stop: threading.Event) -> int:
        out = _LineWriter(on_line)
        conn = self._connection()
        promise = conn.run(command_line(argv), hide=True, warn=True, asynchronous=True,
                           out_stream=out, err_stream=out, in_stream=False)
        # until the command ends (its exit code, as LocalHost returns it) or we are told to stop
        while not stop.wait(0.2):
            if promise.runner.process_is_finished:
                return int(promise.join().exited)
        with contextlib.suppress(Exception):
            promise.runner.kill()
        return -15  # stopped, as a terminated local command reads

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._gateway):
                if conn is not None:
                    conn.close()
            self._conn = self._gateway = None


class _SSHSession:
    def __init__(self, name: str, line: str, channel: Any) -> None:
        self._name = name
        self._line = line
        self._channel = channel
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._readers = [threading.Thread(target=self._drain, args=(read, into), daemon=True)
                         for read, into in ((channel.recv, self._out),
                                            (channel.recv_stderr, self._err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(read: Callable[[int], bytes], into: list[bytes]) -> None:
        with contextlib.suppress(OSError, EOFError):
            while chunk := read(65536):
                into.append(chunk)

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._channel.sendall(data)

    def finish(self, data: bytes = b"", timeout: float | None = None) -> Result:
        self.send(data)
        with contextlib.suppress(OSError, EOFError):
            self._channel.shutdown_write()
        if not self._channel.status_event.wait(timeout):
            self._channel.close()
            return Result(self._name, self._line, 124, _text(b"".join(self._out)),
                          _text(b"".join(self._err)) + f"timed out after {timeout} s")
        for reader in self._readers:
            reader.join(5)
        code = self._channel.recv_exit_status()
        self._channel.close()
        return Result(self._name, self._line, 255 if code == -1 else code,
                      _text(b"".join(self._out)), _text(b"".join(self._err)))


class _LineWriter(io.TextIOBase):
    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._on_line(line)
        return len(text)


def _fingerprint(key: Any) -> str:
    """As OpenSSH shows a key: its type and SHA256 fingerprint."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def host_for(entry: HostEntry, ssh: SSHSettings, port: int | None = None) -> Host:
    if entry.local:
        return LocalHost(entry.address)
    return SSHHost(entry, ssh, port)
