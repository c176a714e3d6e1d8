"""The settings registry: the README's tables, the CLI and the runtime's defaults agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolkit import settings
from toolkit.cli import build_parser
from toolkit.daemon.settings import DaemonSettings
from toolkit.errors import ConfigError
from toolkit.runtime.config import MasterConfig
from toolkit.runtime.ensemble import EnsembleConfig
from toolkit.runtime.worker import WorkerConfig

README = Path(__file__).resolve().parents[2] / "README.md"
NOT_IN_THE_REGISTRY = {"--consolidate", "MASTER_URL", "--pid-file", "--insecure"}


def readme_tables(header: str) -> list[list[str]]:
    """The rows, cut into cells, of every README table whose header line is ``header``."""
    text = README.read_text()
    rows = []
    for start in [m.end() for m in re.finditer(re.escape(header) + "\n", text)]:
        table = text[start:text.index("\n\n", start)]
        rows += [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
                 for line in table.splitlines()[1:]]
    return rows


def name(cell: str) -> str:
    """A flag, variable or key as a table cell shows it: `--port`."""
    return cell.strip("`")


@pytest.mark.parametrize("role", ["master", "worker", "zookeeper"])
def test_the_readme_tables_say_what_the_registry_declares(role: str) -> None:
    rows = {name(flag): (name(env), default, meaning) for flag, env, default, meaning
            in readme_tables(f"| `ember {role}` flag | variable | default | meaning |")}
    declared = {s.flag: (s.env, s.shown, s.help) for s in settings.of_role(role)}
    assert {f: rows[f] for f in rows if f not in NOT_IN_THE_REGISTRY} == declared


def test_the_readme_table_of_flags_both_roles_take_says_what_the_registry_declares() -> None:
    rows = {name(flag): (name(env), default, meaning) for flag, env, default, meaning
            in readme_tables("| flag | variable | default | meaning |")}
    declared = {s.flag: (s.env, s.shown, s.help) for s in settings.of_role("common")}
    assert {f: rows[f] for f in rows if f not in NOT_IN_THE_REGISTRY} == declared


def test_the_readme_tables_of_host_wide_variables_say_what_the_registry_declares() -> None:
    rows = {name(env): (name(key), default, meaning) for env, key, default, meaning
            in readme_tables("| variable | inventory key | default | meaning |")}
    declared = {s.env: (s.key or "", s.shown, s.help)
                for s in settings.of_role("daemon") + settings.of_role("systemd")}
    assert rows == declared


@pytest.mark.parametrize("role", ["master", "worker", "zookeeper"])
def test_every_setting_is_a_flag_whose_help_names_its_variable_and_default(role: str) -> None:
    sub = build_parser()._subparsers._group_actions[0].choices[role]  # type: ignore[union-attr]
    helps = {opt: action.help for action in sub._actions for opt in action.option_strings}
    common = settings.of_role("common") if role != "zookeeper" else ()
    for setting in settings.of_role(role) + common:
        assert f"${setting.env}, else {setting.shown.strip('`')}" in str(helps[setting.flag])


def test_the_runtime_configs_take_their_defaults_from_the_registry() -> None:
    configs = {
        "master": MasterConfig(host="h"),
        "worker": WorkerConfig(masters=(("h", 1),), host="h", cores=1, memory=1,
                               work_dir=Path(".")),
        "daemon": DaemonSettings(Path("h"), Path("c"), Path("l"), Path("p"), "i"),
        "zookeeper": EnsembleConfig(server_id=1, servers=(("h", 1, 2),), data_dir=Path(".")),
    }
    configs["systemd"] = configs["daemon"]
    for setting in settings.SETTINGS:
        if setting.default is not None and setting.role in configs:
            assert getattr(configs[setting.role], setting.name) == setting.default, setting


def test_flag_then_variable_then_default_and_errors_name_their_source() -> None:
    timeout = settings.named("master", "worker_timeout")
    env = {"EMBER_WORKER_TIMEOUT": "30"}
    assert settings.resolve(timeout, "5", env) == 5.0
    assert settings.resolve(timeout, None, env) == 30.0
    assert settings.resolve(timeout, None, {}) == 60.0
    assert settings.resolve(timeout, None, {"EMBER_WORKER_TIMEOUT": " "}) == 60.0  # blank: unset
    with pytest.raises(ConfigError, match=re.escape("EMBER_WORKER_TIMEOUT: 'soon' is not")):
        settings.resolve(timeout, None, {"EMBER_WORKER_TIMEOUT": "soon"})
    memory = settings.named("worker", "memory")
    with pytest.raises(ConfigError, match=re.escape("--memory: '512' has no unit")):
        settings.resolve(memory, "512", {})
    assert settings.resolve(memory, None, {}, computed=lambda: 2048) == 2048


@pytest.mark.parametrize(("role", "name", "text", "error"), [
    ("daemon", "niceness", "20", "'20' is not a whole number from -20 to 19"),
    ("daemon", "niceness", "1.5", "'1.5' is not a whole number from -20 to 19"),
    ("daemon", "log_max_files", "-1", "from 0 to 1000 (0 turns rotation off)"),
    ("systemd", "systemd_scope", "global", "'global' is not one of system, user"),
    ("systemd", "run_user", "Jane Doe", "'Jane Doe' is not a user or group name"),
    ("systemd", "limit_nofile", "10", "'10' is not a whole number from 64 to 1073741824"),
    ("systemd", "watchdog_sec", "-1", "'-1' is not a number of seconds (0: off)"),
    ("daemon", "stop_timeout", "inf", "'inf' must be more than 0 seconds"),
    ("daemon", "ident", "a/b", "'a/b' may hold only letters, digits, . _ -"),
    ("daemon", "log_dir", "", "'' is empty"),
    ("daemon", "log_dir", "/a\nb", "is not one line of text"),
    ("master", "port", "65536", "'65536' is not a port number (0-65535)"),
])
def test_parsers_quote_the_value_and_say_what_was_wanted(role: str, name: str, text: str,
                                                         error: str) -> None:
    setting = settings.named(role, name)
    with pytest.raises(ValueError) as caught:
        setting.parse(text)
    assert str(caught.value) == error or error in str(caught.value)


def test_the_inventory_is_stricter_on_ports_the_playbook_tells_others() -> None:
    port = settings.named("master", "port")
    assert port.parse("0") == 0  # `ember master --port 0`: any free port
    assert port.key_parse is not None
    with pytest.raises(ValueError, match=re.escape("'0' is not a port number (1-65535)")):
        port.key_parse("0")


def test_host_wide_settings_are_what_the_playbook_writes_into_ember_env() -> None:
    wide = {s.key: (s.env, s.kind) for s in settings.host_wide()}
    assert wide == {
        "ember_home": ("EMBER_HOME", "path"), "nice": ("EMBER_NICENESS", "value"),
        "log_max_files": ("EMBER_LOG_MAX_FILES", "value"),
        "stop_timeout": ("EMBER_STOP_TIMEOUT", "value"), "log_dir": ("EMBER_LOG_DIR", "path"),
        "pid_dir": ("EMBER_PID_DIR", "path"),
        "systemd_scope": ("EMBER_SYSTEMD_SCOPE", "value"),
        "systemd_output": ("EMBER_SYSTEMD_OUTPUT", "value"),
        "run_user": ("EMBER_RUN_USER", "value"), "run_group": ("EMBER_RUN_GROUP", "value"),
        "restart_sec": ("EMBER_RESTART_SEC", "value"),
        "limit_nofile": ("EMBER_LIMIT_NOFILE", "value"),
        "watchdog_sec": ("EMBER_WATCHDOG_SEC", "value")}
    assert [s.key for s in settings.host_wide() if s.builtin] == [
        "nice", "log_max_files", "stop_timeout"]


def test_every_variable_and_inventory_key_is_declared_once() -> None:
    envs = [s.env for s in settings.SETTINGS if s.env]
    assert len(envs) == len(set(envs))
    keys = [(s.role, s.key) for s in settings.SETTINGS if s.key]
    assert len(keys) == len(set(keys))


def test_the_default_home() -> None:
    assert settings.default_home() == Path.home() / ".ember"
    assert settings.resolve(settings.named("daemon", "home"), None, {},
                            settings.default_home) == Path.home() / ".ember"
