"""Daemon settings: precedence, validation, and the names of pid, log and socket files."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.daemon.settings import check_socket_path, load_settings
from toolkit.errors import ConfigError


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"EMBER_HOME": str(tmp_path), "USER": "op", **extra}


def test_defaults_keep_pid_files_out_of_tmp(tmp_path: Path) -> None:
    s = load_settings(env(tmp_path))
    assert s.pid_dir == tmp_path / "run"
    assert s.log_dir == tmp_path / "logs"
    assert (s.ident, s.niceness, s.log_max_files, s.stop_timeout, s.backend) == (
        "op", 0, 5, 10.0, "supervisor")
    assert s.pid_file("worker", 2) == tmp_path / "run" / "ember-op-worker-2.pid"
    assert s.log_file("worker", 2) == tmp_path / "logs" / f"ember-op-worker-2-{s.hostname}.out"


def test_environment_overrides_the_env_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ember-env.sh").write_text(
        "EMBER_NICENESS=5\nEMBER_LOG_MAX_FILES=2\nEMBER_WORKER_CORES=3\n")
    s = load_settings(env(tmp_path, EMBER_NICENESS="9"))
    assert (s.niceness, s.log_max_files) == (9, 2)
    assert s.env["EMBER_WORKER_CORES"] == "3"


@pytest.mark.parametrize(("key", "value", "error"), [
    ("EMBER_NICENESS", "fast", "EMBER_NICENESS='fast' must be a whole number from -20 to 19"),
    ("EMBER_NICENESS", "40", "from -20 to 19"),
    ("EMBER_LOG_MAX_FILES", "x", "(0 turns rotation off)"),
    ("EMBER_STOP_TIMEOUT", "0", "EMBER_STOP_TIMEOUT='0' must be a number of seconds above 0"),
    ("EMBER_IDENT_STRING", "a/b", "may hold only letters"),
    ("EMBER_DAEMON_BACKEND", "docker", "'docker' is not one of supervisor, plain"),
])
def test_bad_values_name_the_variable(tmp_path: Path, key: str, value: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env(tmp_path, **{key: value}))
    assert error in str(caught.value)


def test_socket_path_limit() -> None:
    check_socket_path(Path("/" + "a" * 106))
    with pytest.raises(ConfigError, match="is 108 bytes long; unix sockets allow at most 107"):
        check_socket_path(Path("/" + "a" * 107))


def test_notify_names_differ_per_instance(tmp_path: Path) -> None:
    s = load_settings(env(tmp_path))
    names = {s.notify_name(r, i) for r in ("master", "worker") for i in (1, 2)}
    assert len(names) == 4 and all(n.startswith("@ember-ready-") for n in names)
