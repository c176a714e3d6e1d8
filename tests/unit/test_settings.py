"""The settings registry: the README's tables, the CLI and the runtime's defaults agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolkit import settings
from toolkit.cli import build_parser
from toolkit.errors import ConfigError
from toolkit.runtime.master import MasterConfig
from toolkit.runtime.worker import WorkerConfig

README = Path(__file__).resolve().parents[2] / "README.md"
NOT_IN_THE_REGISTRY = {"--consolidate", "MASTER_URL"}  # a switch and a positional


def readme_rows(role: str) -> dict[str, tuple[str, str, str]]:
    """``| `flag` | `VAR` | default | meaning |`` rows of the README's table for the role."""
    text = README.read_text()
    table = text[text.index(f"| `ember {role}` flag |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        flag, env, default, meaning = (c.strip() for c in line.strip("|").split(" | "))
        rows[flag.strip("`")] = (env.strip("`"), default, meaning)
    return rows


@pytest.mark.parametrize("role", ["master", "worker"])
def test_the_readme_tables_say_what_the_registry_declares(role: str) -> None:
    rows = readme_rows(role)
    declared = {s.flag: (s.env, s.shown, s.help) for s in settings.of_role(role)}
    assert {f: rows[f] for f in rows if f not in NOT_IN_THE_REGISTRY} == declared


@pytest.mark.parametrize("role", ["master", "worker"])
def test_every_setting_is_a_flag_whose_help_names_its_variable_and_default(role: str) -> None:
    sub = build_parser()._subparsers._group_actions[0].choices[role]  # type: ignore[union-attr]
    helps = {opt: action.help for action in sub._actions for opt in action.option_strings}
    for setting in settings.of_role(role):
        assert f"${setting.env}, else {setting.shown.strip('`')}" in str(helps[setting.flag])


def test_the_runtime_configs_take_their_defaults_from_the_registry() -> None:
    master = MasterConfig(host="h")
    worker = WorkerConfig(masters=(("h", 1),), host="h", cores=1, memory=1, work_dir=Path("."))
    for setting in settings.SETTINGS:
        if setting.default is not None:
            config = master if setting.role == "master" else worker
            assert getattr(config, setting.name) == setting.default, setting


def test_flag_then_variable_then_default_and_errors_name_their_source() -> None:
    (timeout,) = [s for s in settings.of_role("master") if s.name == "worker_timeout"]
    env = {"EMBER_WORKER_TIMEOUT": "30"}
    assert settings.resolve(timeout, "5", env) == 5.0
    assert settings.resolve(timeout, None, env) == 30.0
    assert settings.resolve(timeout, None, {}) == 60.0
    with pytest.raises(ConfigError, match=re.escape("EMBER_WORKER_TIMEOUT: 'soon' is not")):
        settings.resolve(timeout, None, {"EMBER_WORKER_TIMEOUT": "soon"})
    (memory,) = [s for s in settings.of_role("worker") if s.name == "memory"]
    with pytest.raises(ConfigError, match=re.escape("--memory: '512' has no unit")):
        settings.resolve(memory, "512", {})
    assert settings.resolve(memory, None, {}, computed=lambda: 2048) == 2048
