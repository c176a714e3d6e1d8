"""Escaping for unit files and EnvironmentFile=, and the watchdog interval (pure)."""

from __future__ import annotations

from toolkit.base.notify import watchdog_interval
from toolkit.render import INSTANCE, systemd_env, systemd_word


def test_words_escape_specifiers_and_expansion_and_quote_spaces() -> None:
    assert systemd_word("/opt/ember/venv/bin/python") == "/opt/ember/venv/bin/python"
    assert systemd_word("100%") == "100%%"
    assert systemd_word("$HOME") == "$$HOME"
    assert systemd_word('a b"c') == '"a b\\"c"'
    assert systemd_word(f"worker-{INSTANCE}") == "worker-%i"
    assert systemd_word("%i") == "%%i"  # a literal %i is not the instance


def test_environment_file_lines_are_quoted_one_per_key() -> None:
    text = systemd_env({"EMBER_B": 'say "hi" \\ bye', "EMBER_A": "plain"})
    assert text == 'EMBER_A="plain"\nEMBER_B="say \\"hi\\" \\\\ bye"\n'


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}, pid=7) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "7"}, pid=7) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}, pid=7) is None
