"""ember-env.sh is read, never executed; every refusal names the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.base.envfile import parse_env_file, shell_quote
from toolkit.errors import ConfigError


def parse(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    path = tmp_path / "ember-env.sh"
    path.write_text(text)
    return parse_env_file(path, environ or {})


def test_assignments_comments_exports_and_quotes(tmp_path: Path) -> None:
    text = """
# a comment
EMBER_A=plain
export EMBER_B='single $NOT expanded'
EMBER_C="double \\"quoted\\" $EMBER_A"
EMBER_D=${EMBER_A}-suffix   # trailing comment
EMBER_E=
EMBER_F=$HOME/logs
EMBER_G=a\\ b
"""
    assert parse(tmp_path, text, {"HOME": "/home/op"}) == {
        "EMBER_A": "plain",
        "EMBER_B": "single $NOT expanded",
        "EMBER_C": 'double "quoted" plain',
        "EMBER_D": "plain-suffix",
        "EMBER_E": "",
        "EMBER_F": "/home/op/logs",
        "EMBER_G": "a b",
    }


@pytest.mark.parametrize(("line", "error"), [
    ("EMBER_X=$(whoami)", "command substitution is not supported"),
    ("EMBER_X=`whoami`", "command substitution is not supported"),
    ('EMBER_X="a $(whoami)"', "command substitution is not supported"),
    ("EMBER_X=a b", "unquoted space"),
    ("EMBER_X='open", "unterminated single quote"),
    ('EMBER_X="open', "unterminated double quote"),
    ("EMBER_X=a;rm -rf /", "';' is not allowed"),
    ("EMBER_X=${A:-b}", r"only \$\{NAME\} expansions"),
    ("not an assignment", "expected KEY=value"),
    ("1X=2", "expected KEY=value"),
])
def test_refusals_name_file_and_line(tmp_path: Path, line: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error) as caught:
        parse(tmp_path, f"# header\nEMBER_OK=1\n{line}\n")
    assert f"{tmp_path / 'ember-env.sh'} line 3:" in str(caught.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        parse_env_file(tmp_path / "missing.sh", {})


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=40))
def test_shell_quote_round_trips(value: str) -> None:
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as tmp:
        assert parse(Path(tmp), f"EMBER_V={shell_quote(value)}\n")["EMBER_V"] == value
