"""Daemon settings: precedence, validation, and the names of pid, log and socket files."""

from __future__ import annotations

import os
import pwd
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
    ("EMBER_NICENESS", "fast", "EMBER_NICENESS: 'fast' is not a whole number from -20 to 19"),
    ("EMBER_NICENESS", "40", "from -20 to 19"),
    ("EMBER_LOG_MAX_FILES", "x", "(0 turns rotation off)"),
    ("EMBER_STOP_TIMEOUT", "0", "EMBER_STOP_TIMEOUT: '0' must be more than 0 seconds"),
    ("EMBER_IDENT_STRING", "a/b", "may hold only letters"),
    ("EMBER_DAEMON_BACKEND", "docker", "'docker' is not one of supervisor, plain"),
])
def test_bad_values_name_the_variable(tmp_path: Path, key: str, value: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env(tmp_path, **{key: value}))
    assert error in str(caught.value)


@pytest.mark.parametrize(("key", "value", "error"), [
    ("EMBER_SYSTEMD_SCOPE", "global", "EMBER_SYSTEMD_SCOPE: 'global' is not one of system, user"),
    ("EMBER_RUN_USER", "Jane Doe", "EMBER_RUN_USER: 'Jane Doe' is not a user or group name"),
    ("EMBER_LIMIT_NOFILE", "10", "EMBER_LIMIT_NOFILE: '10' is not a whole number from 64"),
    ("EMBER_WATCHDOG_SEC", "-1", "EMBER_WATCHDOG_SEC: '-1' is not a number of seconds (0: off)"),
    ("EMBER_LOG_MAX_BYTES", "big", "EMBER_LOG_MAX_BYTES: 'big' is not a whole number"),
    ("EMBER_START_TIMEOUT", "soon", "EMBER_START_TIMEOUT: 'soon' is not a number of seconds"),
])
def test_a_bad_value_in_ember_env_sh_names_the_variable_and_the_value(
        tmp_path: Path, key: str, value: str, error: str) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ember-env.sh").write_text(f"EMBER_NICENESS=3\n{key}='{value}'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env(tmp_path))
    assert error in str(caught.value)


def test_flags_win_over_the_variables_and_bad_ones_are_named(tmp_path: Path) -> None:
    base = env(tmp_path, EMBER_DAEMON_BACKEND="plain", EMBER_SYSTEMD_SCOPE="user")
    assert (load_settings(base).backend, load_settings(base).systemd_scope) == ("plain", "user")
    chosen = load_settings(base, backend="systemd", scope="system")
    assert (chosen.backend, chosen.systemd_scope) == ("systemd", "system")
    with pytest.raises(ConfigError, match="--backend: 'docker' is not one of supervisor, plain"):
        load_settings(base, backend="docker")
    with pytest.raises(ConfigError, match="--scope: 'global' is not one of system, user"):
        load_settings(base, scope="global")


def test_every_host_wide_value_is_read_and_typed(tmp_path: Path) -> None:
    s = load_settings(env(tmp_path, EMBER_SYSTEMD_OUTPUT="file", EMBER_RUN_USER="ember",
                          EMBER_RESTART_SEC="2.5", EMBER_LIMIT_NOFILE="4096",
                          EMBER_WATCHDOG_SEC="0", EMBER_NO_DAEMONIZE="1",
                          EMBER_LOG_DIR="~/logs", EMBER_WORKER_DIR="w"))
    assert (s.systemd_output, s.run_user, s.run_group, s.restart_sec, s.limit_nofile,
            s.watchdog_sec, s.no_daemonize) == ("file", "ember", None, 2.5, 4096, 0.0, True)
    assert s.log_dir == Path.home() / "logs" and s.supervisor_dir == s.pid_dir
    assert s.work_dir == Path("w").absolute()


def test_socket_path_limit() -> None:
    check_socket_path(Path("/" + "a" * 106))
    with pytest.raises(ConfigError, match="is 108 bytes long; unix sockets allow at most 107"):
        check_socket_path(Path("/" + "a" * 107))


def test_notify_names_differ_per_instance(tmp_path: Path) -> None:
    s = load_settings(env(tmp_path))
    names = {s.notify_name(r, i) for r in ("master", "worker") for i in (1, 2)}
    assert len(names) == 4 and all(n.startswith("@ember-ready-") for n in names)


def test_roles_started_by_root_run_as_an_unprivileged_user_unless_told_root() -> None:
    from toolkit.daemon.settings import DEFAULT_RUN_USER, run_as

    assert run_as(None) == DEFAULT_RUN_USER == "ember"
    assert run_as("svc-ember") == "svc-ember"
    assert run_as("root") is None  # the operator asked for root


def test_a_user_managers_units_switch_no_user(tmp_path: Path) -> None:
    import dataclasses
    import os

    from toolkit.daemon.settings import load_settings

    settings = load_settings({"EMBER_HOME": str(tmp_path)})
    user_scope = dataclasses.replace(settings, backend="systemd", systemd_scope="user")
    assert user_scope.user is None
    expected = "ember" if os.geteuid() == 0 else None
    assert dataclasses.replace(settings, run_user=None).user == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files over to another user needs root")
def test_handing_over_never_follows_a_link_the_run_user_could_have_made(tmp_path: Path) -> None:
    from toolkit.daemon.settings import hand_over

    nobody = pwd.getpwnam("nobody")
    home, outside = tmp_path / "home", tmp_path / "etc"
    home.mkdir()
    outside.mkdir()
    (outside / "shadow").write_text("root's\n")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)  # the run user owns its home
    (home / "logs").symlink_to(outside)  # what that user could do
    settings = load_settings(env(home, EMBER_RUN_USER="nobody"))
    with pytest.raises(ConfigError, match="logs is a symbolic link"):
        hand_over(settings)
    assert (outside.stat().st_uid, (outside / "shadow").stat().st_uid) == (0, 0)

    (home / "logs").unlink()
    (home / "logs").mkdir()
    (home / "logs" / "ember.out").write_text("a log\n")
    (home / "logs" / "link").symlink_to(outside / "shadow")
    hand_over(settings)
    assert (home / "logs").stat().st_uid == nobody.pw_uid
    assert (home / "logs" / "ember.out").stat().st_uid == nobody.pw_uid
    assert (outside / "shadow").stat().st_uid == 0  # a link in it is not followed either


@pytest.mark.skipif(os.geteuid() != 0, reason="the walk is careful only as root")
def test_a_link_only_root_could_make_is_followed_part_by_part() -> None:
    import shutil
    import tempfile

    from toolkit.base.files import open_dir, write_atomic

    nobody = pwd.getpwnam("nobody")
    safe = Path(tempfile.mkdtemp(dir=Path.home()))  # root's, and only root may write there
    try:
        (safe / "real").mkdir()
        (safe / "var").symlink_to(safe / "real")  # root's own link: followed
        write_atomic(safe / "var" / "conf" / "x.conf", b"x\n")
        assert (safe / "real" / "conf" / "x.conf").read_text() == "x\n"
        home, outside = safe / "home", safe / "etc"
        home.mkdir()
        outside.mkdir()
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        (home / "logs").symlink_to(outside)  # the run user's link, behind root's
        (safe / "varlog").symlink_to(home / "logs")
        with pytest.raises(ConfigError, match="logs is a symbolic link"):
            os.close(open_dir(safe / "varlog"))
        with pytest.raises(ConfigError, match="logs is a symbolic link"):
            write_atomic(safe / "varlog" / "ember.conf", b"root's\n")
        assert list(outside.iterdir()) == []
    finally:
        shutil.rmtree(safe)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files over to another user needs root")
def test_the_run_user_gets_what_roles_write_and_root_keeps_what_root_runs_and_reads(
        tmp_path: Path) -> None:
    from toolkit.base.files import bundle, install_bundle
    from toolkit.daemon.settings import hand_over

    nobody = pwd.getpwnam("nobody")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, nobody.pw_uid, nobody.pw_gid)  # as an earlier Ember left it
    conf = home / "conf"
    installed = install_bundle(bundle([(str(conf / "ember-env.sh"), b"EMBER_X=1\n", 0o644),
                                       (str(conf / "secret"), b"s" * 32, 0o600)]))
    settings = load_settings(env(home, EMBER_RUN_USER="nobody"))
    hand_over(settings, installed)
    owner = {p.name: p.stat().st_uid for p in (home, conf, conf / "ember-env.sh",
                                               conf / "secret", home / "logs", home / "run",
                                               home / "work")}
    assert owner == {"home": 0, "conf": 0, "ember-env.sh": 0, "secret": nobody.pw_uid,
                     "logs": nobody.pw_uid, "run": nobody.pw_uid, "work": nobody.pw_uid}
    assert conf.stat().st_mode & 0o777 == 0o711  # passed through, not listed or changed


@pytest.mark.skipif(os.geteuid() != 0, reason="a link of another user matters to root")
def test_root_opens_no_lock_or_log_through_a_link_in_the_run_users_directory(
        tmp_path: Path) -> None:
    from toolkit.daemon.plain import PlainBackend
    from toolkit.daemon.supervisor import SupervisorBackend

    precious = tmp_path / "shadow"
    precious.write_text("root's\n")
    settings = load_settings(env(tmp_path / "home", EMBER_RUN_USER="nobody"))
    settings.supervisor_dir.mkdir(parents=True)
    (settings.supervisor_dir / "supervisor.lock").symlink_to(precious)
    with pytest.raises(OSError), SupervisorBackend(settings).locked():
        pass
    settings.log_dir.mkdir(parents=True)
    log = settings.log_dir / "ember-op-master-1.out"
    log.symlink_to(precious)
    with pytest.raises(OSError):
        PlainBackend(settings).launch("master", 1, ["true"], {}, log)
    assert precious.read_text() == "root's\n"
