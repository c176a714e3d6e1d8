"""`ember` flags with EMBER_* fallbacks: a bad value is exit 2 with an error naming its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.cli import main


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBER_HOME", str(tmp_path))
    for name in ("EMBER_CONF_DIR", "EMBER_DAEMON_BACKEND", "EMBER_SYSTEMD_SCOPE",
                 "EMBER_START_TIMEOUT", "EMBER_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize(("argv", "env", "error"), [
    (["daemon", "start", "worker", "--timeout", "soon"], {},
     "ember daemon: error: --timeout: 'soon' is not a number of seconds"),
    (["daemon", "start", "worker", "--timeout", "-5"], {},
     "ember daemon: error: --timeout: '-5' must be more than 0 seconds"),
    (["daemon", "status", "master", "--backend", "docker"], {},
     "ember daemon: error: --backend: 'docker' is not one of supervisor, plain, systemd"),
    (["daemon", "status", "master"], {"EMBER_DAEMON_BACKEND": "docker"},
     "ember daemon: error: EMBER_DAEMON_BACKEND: 'docker' is not one of supervisor, plain"),
    (["daemon", "status", "master", "--scope", "global"], {},
     "ember daemon: error: --scope: 'global' is not one of system, user"),
    (["daemon", "status", "worker", "1,x"], {},
     "ember daemon: error: INSTANCE: 'x' is not a positive whole number"),
    (["master"], {"EMBER_LOG_LEVEL": "LOUD"},
     "ember master: error: EMBER_LOG_LEVEL: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
    (["worker", "ember://127.0.0.1:7077", "--log-level", "debug"], {},
     "ember worker: error: --log-level: 'debug' is not one of DEBUG, INFO, WARNING, ERROR"),
    (["submit", "--master", "ember://127.0.0.1:7077", "--cores", "0", "--", "true"], {},
     "ember submit: error: --cores: '0' is not a positive whole number"),
    (["submit", "--master", "ember://127.0.0.1:7077", "--memory", "512", "--", "true"], {},
     "ember submit: error: --memory: '512' has no unit: add m or g, as in 512m"),
])
def test_a_bad_flag_or_variable_is_named(argv: list[str], env: dict[str, str], error: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    assert error in capsys.readouterr().err


def test_daemon_help_says_the_registry_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["daemon", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: $EMBER_DAEMON_BACKEND, else supervisor)" in text
    assert "(default: $EMBER_SYSTEMD_SCOPE, else system)" in text
    assert "sooner than $EMBER_START_TIMEOUT (30)" in text
