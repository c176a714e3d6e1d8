"""The rendered systemd units: `systemd-analyze verify` accepts every one of them, and they say
what operators rely on. No systemd needs to run for this (systemd-analyze reads the files)."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from toolkit.daemon.settings import load_settings
from toolkit.daemon.systemd import unit_texts

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (package systemd)")

VARIANTS = [(backend, scope, output) for backend in ("systemd", "supervisor")
            for scope in ("system", "user") for output in ("journal", "file")]


def settings_for(tmp: Path, backend: str, scope: str, output: str, **env: str):  # type: ignore[no-untyped-def]
    settings = load_settings({"EMBER_HOME": str(tmp / "home"), "EMBER_IDENT_STRING": "t",
                              "EMBER_SUPERVISOR_DIR": str(tmp / "sv"), "EMBER_NICENESS": "5",
                              "EMBER_STOP_TIMEOUT": "7", **env}, backend=backend)
    return dataclasses.replace(settings, systemd_scope=scope, systemd_output=output)


def verify(unit_dir: Path, scope: str, runtime: Path) -> subprocess.CompletedProcess[str]:
    runtime.mkdir(mode=0o700, exist_ok=True)
    argv = ["systemd-analyze", "verify", *(["--user"] if scope == "user" else []),
            *sorted(str(p) for p in unit_dir.glob("*.service"))]
    return subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime)})


@pytest.mark.parametrize("backend, scope, output", VARIANTS)
def test_every_rendered_unit_passes_systemd_analyze_verify(
        tmp_path: Path, backend: str, scope: str, output: str) -> None:
    settings = settings_for(tmp_path, backend, scope, output, EMBER_RUN_USER="root",
                            EMBER_WATCHDOG_SEC="20")
    units = tmp_path / "units"
    units.mkdir()
    for name, text in unit_texts(settings).items():
        (units / name).write_text(text)
    done = verify(units, scope, tmp_path / "xdg")
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


def test_role_units_say_what_operators_rely_on(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "systemd", "system", "file", EMBER_RUN_USER="ember",
                            EMBER_RUN_GROUP="ember", EMBER_RESTART_SEC="3",
                            EMBER_LIMIT_NOFILE="4096", EMBER_WATCHDOG_SEC="20")
    worker = unit_texts(settings)["ember-worker@.service"]
    lines = set(worker.splitlines())
    home = tmp_path / "home"
    host = socket.gethostname()
    for expected in [
        "Type=notify", "Nice=5", "User=ember", "Group=ember", "Restart=on-failure",
        "RestartSec=3s", "TimeoutStopSec=7s", "KillMode=mixed", "LimitNOFILE=4096",
        "WatchdogSec=20s", f"WorkingDirectory={home}",
        f"EnvironmentFile={home}/conf/ember-systemd.env",
        f"PIDFile={home}/run/ember-t-worker-%i.pid",  # the pid file the runtime writes
        f"StandardOutput=append:{home}/logs/ember-t-worker-%i-{host}.out",
        "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
    ]:
        assert expected in lines, expected
    assert any(line.startswith("ExecStart=") and line.endswith(" -m toolkit daemon run worker %i")
               for line in lines)
    writable = next(line for line in lines if line.startswith("ReadWritePaths="))
    for folder in ("", "/logs", "/run", "/work", "/conf"):
        assert f"-{home}{folder} " in writable + " "  # work and log dirs stay writable
    journal = unit_texts(dataclasses.replace(settings, systemd_output="journal"))
    assert "StandardOutput=journal" in journal["ember-master.service"].splitlines()


def test_supervisor_mode_installs_supervisord_only_without_ember_settings(tmp_path: Path) -> None:
    texts = unit_texts(settings_for(tmp_path, "supervisor", "system", "journal"))
    assert list(texts) == ["ember-supervisord.service"]
    unit = texts["ember-supervisord.service"]
    assert f"-n -c {tmp_path}/sv/supervisord.conf" in unit
    assert "EnvironmentFile" not in unit and "Type=simple" in unit


@pytest.mark.parametrize("backend", ["systemd", "supervisor"])
def test_units_name_the_ident_they_run_under_not_a_cluster(tmp_path: Path, backend: str) -> None:
    """The ident (EMBER_IDENT_STRING, the user by default) names supervisord's identifier and
    the pid and log files; the cluster name only names the secret file."""
    settings = settings_for(tmp_path, backend, "system", "journal")
    for name, unit in unit_texts(settings).items():
        assert "(ident t" in unit.splitlines()[0], name
        assert "cluster" not in unit, name
    from toolkit.daemon.supervisor import SupervisorBackend

    SupervisorBackend(settings).write_config()
    assert "identifier=ember-t\n" in (tmp_path / "sv" / "supervisord.conf").read_text()


def test_user_scope_units_leave_out_what_a_user_manager_cannot_do(tmp_path: Path) -> None:
    unit = unit_texts(settings_for(tmp_path, "systemd", "user", "journal",
                                   EMBER_RUN_USER="ember"))["ember-master.service"]
    assert "User=" not in unit and "ProtectSystem" not in unit
    assert "WantedBy=default.target" in unit


def test_a_path_systemd_cannot_hold_is_refused_by_name(tmp_path: Path) -> None:
    from toolkit.errors import ConfigError

    settings = settings_for(tmp_path / "with space", "systemd", "system", "journal")
    with pytest.raises(ConfigError, match="cannot go in a systemd unit"):
        unit_texts(settings)


def ember_daemon(tmp: Path, *args: str, path: str = "/usr/bin:/bin"
                 ) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    env = {"PATH": path, "HOME": str(tmp), "EMBER_HOME": str(tmp / "home"),
           "EMBER_DAEMON_BACKEND": "systemd", "EMBER_IDENT_STRING": "t",
           "LANG": os.environ.get("LANG", "C.UTF-8")}
    return subprocess.run([sys.executable, "-m", "toolkit", "daemon", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_host_without_systemctl_gets_a_clear_error(tmp_path: Path) -> None:
    done = ember_daemon(tmp_path, "install-systemd", "master", "--scope", "user",
                        path=str(tmp_path))
    assert done.returncode == 1
    assert "systemctl not found: this host has no systemd" in done.stderr
    assert not (tmp_path / ".config" / "systemd").exists()  # nothing written


@pytest.mark.skipif(Path("/run/systemd/system").exists(),
                    reason="systemd runs on this machine: installing here would be for real")
def test_a_host_where_systemd_does_not_run_gets_a_clear_error(tmp_path: Path) -> None:
    done = ember_daemon(tmp_path, "install-systemd", "master", "--scope", "user")
    assert done.returncode == 1 and "systemd is not running here" in done.stderr
    assert not (tmp_path / ".config" / "systemd").exists()


def test_starting_with_the_systemd_backend_before_install_says_what_to_run(
        tmp_path: Path) -> None:
    done = ember_daemon(tmp_path, "start", "worker", "--scope", "user")
    assert done.returncode == 1
    assert "ember-master.service is not installed: run `fab install-systemd`" in done.stderr
