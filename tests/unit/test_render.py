"""Templates render with every value they need, and escape what supervisor would expand."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from toolkit.base.envfile import parse_env_file
from toolkit.errors import ConfigError
from toolkit.render import render, supervisor_env


def test_program_template_keeps_percent_and_quotes_literal() -> None:
    text = render("supervisor/program.conf.j2", name="ember-op-worker-1", role="worker",
                  instance=1, command=["/usr/bin/nice", "-n", "0", "python", "-m", "toolkit",
                                       "worker", "a%b c"],
                  home="/h", stop_timeout=10, log_file="/h/logs/x.out", log_max_files=5,
                  log_max_bytes=1024, env={"EMBER_X": 'say "50%" now'})
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    section = parser["program:ember-op-worker-1"]
    assert section["command"].endswith("'a%%b c'")
    assert section["environment"] == "EMBER_X='say \"50%%\" now'"
    assert (section["stopasgroup"], section["killasgroup"]) == ("true", "true")
    assert section["stdout_logfile_backups"] == "5"


def test_no_rotation_means_no_size_limit() -> None:
    text = render("supervisor/program.conf.j2", name="p", role="master", instance=1,
                  command=["x"], home="/h", stop_timeout=10, log_file="/l", log_max_files=0,
                  log_max_bytes=1024, env={})
    assert "stdout_logfile_maxbytes=0\n" in text and "stdout_logfile_backups=0\n" in text


def test_missing_value_is_an_error_naming_the_template() -> None:
    expected = r"template supervisor/program\.conf\.j2: 'role' is undefined"
    with pytest.raises(ConfigError, match=expected):
        render("supervisor/program.conf.j2")


def test_env_file_template_round_trips_through_the_parser(tmp_path: Path) -> None:
    values = {"EMBER_HOME": "/opt/ember home", "EMBER_X": "it's $not expanded"}
    path = tmp_path / "ember-env.sh"
    path.write_text(render("ember-env.sh.j2", host="h1", env=values))
    assert parse_env_file(path, {}) == values


def test_supervisor_env_is_sorted() -> None:
    assert supervisor_env({"B": "2", "A": "1"}) == 'A="1",B="2"'


@pytest.mark.parametrize("value", ['say "hi" now', "it's", r"C:\dir", "a,b=c", "50%", "", "$HOME"])
def test_supervisor_reads_back_exactly_what_was_written(value: str) -> None:
    from supervisor.datatypes import dict_of_key_value_pairs

    line = supervisor_env({"EMBER_X": value, "EMBER_Y": "plain"})
    parsed = dict_of_key_value_pairs(line.replace("%%", "%"))  # supervisor expands %% first
    assert parsed == {"EMBER_X": value, "EMBER_Y": "plain"}


@pytest.mark.parametrize(("value", "error"), [
    ("both ' and \" here", "holds both kinds of quote"),
    ("two\nlines", "contains a line break"),
    ('"quoted"', "starts or ends with a quote"),
])
def test_values_supervisor_cannot_hold_are_refused(value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        supervisor_env({"EMBER_X": value})


def test_every_template_is_shipped_in_the_wheel() -> None:
    """Hosts render from <venv>/share/ember/templates: a template missing from pyproject's
    data-files would only fail there."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = {f for patterns in data["data-files"].values() for pattern in patterns
               for f in root.glob(pattern)}
    assert set((root / "templates").rglob("*.j2")) <= shipped


@pytest.mark.parametrize(("env", "problem"), [
    ({"A B": "1"}, "environment name 'A B' is not a variable name"),
    ({"1X": "1"}, "environment name '1X' is not a variable name"),
    ({"OPTS": "-Da=1 ;rm"}, "whitespace then ; or #"),
    ({"OPTS": "x #y"}, "whitespace then ; or #"),
])
def test_supervisor_environment_refuses_what_it_would_misread(env: dict[str, str],
                                                              problem: str) -> None:
    from toolkit.render import supervisor_env

    with pytest.raises(ConfigError, match=problem):
        supervisor_env(env)


def test_supervisor_command_keeps_comment_marks_inside_words() -> None:
    import shlex

    from toolkit.render import supervisor_command

    argv = ["run", "a' ;x", "b #c", ";", "#", "tab\t;z"]
    line = supervisor_command(argv)
    assert not any(line[i].isspace() and line[i + 1] in ";#" for i in range(len(line) - 1))
    assert shlex.split(line) == argv  # as supervisor splits it


def test_systemd_values_are_written_as_systemd_reads_them() -> None:
    from toolkit.render import systemd_env, systemd_seconds

    assert [systemd_seconds(x) for x in (1e6, 2.5, 10.0)] == ["1000000", "2.5", "10"]
    with pytest.raises(ConfigError, match="is not a variable name"):
        systemd_env({"EMBER_X\nEMBER_RUN_USER": "root"})


def test_a_status_after_a_login_shells_greeting_is_still_read() -> None:
    from toolkit.daemon.protocol import read_statuses

    text = 'Welcome!\n{"role": "master", "instance": 1, "code": 0}\n'
    assert read_statuses(text)[1]["code"] == 0
    with pytest.raises(ValueError):
        read_statuses("no status here at all\n")
