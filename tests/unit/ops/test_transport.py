"""The transport contract, on real local processes: what ``run``, ``stream`` and a started
session do is written once, so these hold for SSH too (the lab checks that side by side)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from toolkit.ops.transport import STOPPED, LocalHost


def test_run_gives_exit_code_and_both_outputs() -> None:
    done = LocalHost("h").run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.host, done.exited, done.stdout, done.stderr) == ("h", 3, "out\n", "err\n")
    assert not done.ok and done.tail() == "out\nerr"


def test_a_command_past_its_timeout_is_ended_with_exit_124(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    done = LocalHost().run(["sh", "-c", f"echo $$ > {marker}; echo partial; exec sleep 30"],
                           timeout=1)
    assert done.exited == 124
    assert done.stdout == "partial\n" and done.stderr.endswith("timed out after 1 s")
    pid = int(marker.read_text())
    assert not Path(f"/proc/{pid}").exists()  # ended and reaped, not left behind


def test_a_program_that_does_not_exist_is_exit_127_with_the_reason() -> None:
    done = LocalHost().run(["/nonexistent/ember-tool"])
    assert done.exited == 127 and "/nonexistent/ember-tool" in done.stderr


def test_run_ignores_the_callers_ember_variables_and_passes_its_own(monkeypatch) -> None:
    monkeypatch.setenv("EMBER_MASTER_URL", "ember://leaked:7077")
    done = LocalHost().run(["sh", "-c", "echo ${EMBER_MASTER_URL:-none} $EMBER_CONF_DIR"],
                           env={"EMBER_CONF_DIR": "/c"})
    assert done.stdout == "none /c\n"


def test_a_session_takes_input_while_it_runs_and_gives_lines_as_they_come() -> None:
    session = LocalHost().start(["sh", "-c", "read a; echo got $a; read b; echo got $b >&2"])
    session.send(b"one\n")
    lines = session.lines()
    assert next(lines) == "got one"  # before the rest of the input was sent
    result = session.finish(b"two\n", timeout=10)
    assert (result.exited, result.stdout, result.stderr) == (0, "got one\n", "got two\n")


def test_stream_gives_each_line_then_the_exit_code() -> None:
    lines: list[str] = []
    code = LocalHost().stream(["sh", "-c", "echo a; echo b >&2; printf c; exit 4"],
                              lines.append, threading.Event())
    assert code == 4 and sorted(lines) == ["a", "b", "c"]


def test_stream_stops_when_told_and_ends_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    stop = threading.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        stop.set()

    code = LocalHost().stream(["sh", "-c", f"echo $$ > {marker}; echo first; exec sleep 30"],
                              on_line, stop)
    assert (code, lines) == (STOPPED, ["first"])
    deadline = time.monotonic() + 5
    pid = int(marker.read_text())
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_output_held_open_by_a_child_left_behind_does_not_hold_the_result() -> None:
    # like a daemon that keeps the pipe: the command's own exit decides, within its timeout
    done = LocalHost().run(["sh", "-c", "sleep 30 & echo started; exit 0"], timeout=8)
    assert (done.exited, done.stdout) == (0, "started\n")


def test_no_file_descriptor_is_left_open_after_many_commands() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        LocalHost().run(["true"])
    assert len(os.listdir("/proc/self/fd")) <= before + 1
